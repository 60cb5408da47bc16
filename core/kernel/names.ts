// Which strings felt accepts where they become kernel object names or tokens of an `ip -batch`,
// `bridge -batch`, `tc -batch` or `iptables-restore` line. Untrusted text (configs, CNI_* variables, a
// delegate's result) is checked against these at the edge, with a message naming the field; the renderer
// checks again (adapters/kernel/render.ts), so no value can ever add a line or a word to a batch.
//
// Interface names: Linux takes 1-15 bytes without '/', ':' or whitespace, and not '.' or '..'. felt also
// refuses what the batch tools would reinterpret: control characters (a newline ends a batch line), '#' (ip
// starts a comment there), quotes (ip strips a leading one, iptables-restore pairs them) and '\' (an escape
// for iptables-restore), and a leading '-' or '!' (an option or a negation to iptables). Everything else
// ('.', '$', ';', '`', '(' ...) is carried as it is: no shell ever reads these names.

const encoder = new TextEncoder();

/** Why `s` cannot be an interface name felt manages, or undefined when it can. */
export function linkNameProblem(s: string): string | undefined {
  if (s === '') return 'is empty';
  if (encoder.encode(s).length > 15) return 'is too long (at most 15 bytes)';
  if (s === '.' || s === '..') return 'is . or ..';
  if (/[/:]/.test(s)) return "contains '/' or ':'";
  if (/[\s\x00-\x1f\x7f\u0085\u00a0\u2028\u2029]/u.test(s)) return 'contains whitespace or control characters';
  if (/[#'"\\]/.test(s)) return "contains '#', a quote or a backslash (felt refuses what ip -batch and iptables-restore reinterpret)";
  if (/^[-!]/.test(s)) return "starts with '-' or '!'";
  return undefined;
}

export const isLinkName = (s: string): boolean => linkNameProblem(s) === undefined;

/** The name of a namespace at /run/netns/NAME (or /var/run/netns/NAME), as runtimes make them; else undefined. */
export const runNetnsName = (path: string): string | undefined => /^\/(?:var\/)?run\/netns\/([^/]+)$/.exec(path)?.[1];

/** The CNI spec's network name (and libcni's container ID): alphanumeric first, then alphanumerics, '_', '.', '-'. */
export const CNI_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;

/**
 * A network namespace path (CNI_NETNS): absolute, and made only of characters that no batch tool or path
 * lookup reinterprets, with no '.' or '..' component.
 */
export function netnsPathProblem(s: string): string | undefined {
  if (!s.startsWith('/')) return 'is not an absolute path';
  if (/[\s\x00-\x1f\x7f#'"\\]/.test(s)) return "contains whitespace, control characters, '#', a quote or a backslash";
  if (s.split('/').some((seg) => seg === '.' || seg === '..')) return "has a '.' or '..' component";
  return undefined;
}

/**
 * One token of a batch line (an address, a prefix, a MAC, a number, a keyword value): non-empty, no
 * whitespace or control characters, nothing a batch tool reinterprets ('#', quotes, '\').
 */
export const isBatchToken = (s: string): boolean => s !== '' && !/[\s\x00-\x1f\x7f#'"\\]/.test(s);
