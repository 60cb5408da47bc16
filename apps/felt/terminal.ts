// What felt's CLI prints is partly untrusted text: its arguments, and what the log holds (network names,
// a plugin's error message recorded by `felt cni`, a lease's fields, imported events). A terminal acts on
// control characters (ESC sequences clear the screen, retitle the window, rewrite earlier lines; C1 CSI does
// the same in one byte; CR and BS overwrite; bidi overrides reorder what is read), so every printer's output
// passes through `forTerminal` (cli.ts wraps the IO once), and table cells through `cell`, which escapes
// newlines and tabs too so that a value cannot make a row of its own.
//
// An escaped character is written as `\uXXXX`: readable, and inside a JSON string (`--json`, `felt export`
// to stdout) the same character again, so JSON output stays valid and round-trips.

/** C0 controls but newline and tab, DEL, C1 controls, and the Unicode format characters that hide or reorder text. */
const UNSAFE = /[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028\u2029\u202a-\u202e\u2060-\u2069\ufeff]/g;
/** The same, and newline and tab. */
const UNSAFE_IN_CELL = /[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028\u2029\u202a-\u202e\u2060-\u2069\ufeff]/g;

const escape = (c: string): string => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`;

/** Output text with every control character a terminal would act on escaped; newlines and tabs kept. */
export const forTerminal = (s: string): string => s.replace(UNSAFE, escape);

/** One value inside a line (a table cell, a name in a message): newlines and tabs escaped as well. */
export const cell = (s: string): string => s.replace(UNSAFE_IN_CELL, escape);

/** Whether `s` holds any character `cell` would escape (a newline or tab included). */
export const hasControl = (s: string): boolean => s.search(UNSAFE_IN_CELL) >= 0;
