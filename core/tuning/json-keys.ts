// Duplicate keys in JSON text. JSON.parse keeps the last of two equal keys without a word, so a config with
// `"sysctl": {"net.a": "1", "net.a": "0"}` would silently mean "0"; the reference tuning plugin refuses such a
// map, and so does felt. This scans the (already valid) text once and reports the keys that occur more than
// once in the objects at the given paths.

/** Keys occurring twice or more in an object at one of `paths` (e.g. [['sysctl'], ['args', 'cni', 'sysctl']]). */
export function duplicateKeys(text: string, paths: readonly (readonly string[])[]): { path: readonly string[]; key: string }[] {
  const wanted = new Set(paths.map((p) => JSON.stringify(p)));
  const out: { path: readonly string[]; key: string }[] = [];
  let i = 0;
  const ws = (): void => {
    while (i < text.length && ' \t\n\r'.includes(text[i]!)) i++;
  };
  const str = (): string => {
    const start = i;
    i++; // opening quote
    while (i < text.length && text[i] !== '"') i += text[i] === '\\' ? 2 : 1;
    i++; // closing quote
    return JSON.parse(text.slice(start, i)) as string;
  };
  // `path` is undefined inside arrays: no wanted path goes through one.
  const value = (path: readonly string[] | undefined): void => {
    ws();
    const c = text[i];
    if (c === '{') {
      i++;
      const seen = new Set<string>();
      const dup = new Set<string>();
      for (;;) {
        ws();
        if (text[i] === '}') break;
        if (text[i] === ',') {
          i++;
          continue;
        }
        const key = str();
        if (seen.has(key)) dup.add(key);
        seen.add(key);
        ws();
        i++; // ':'
        value(path ? [...path, key] : undefined);
      }
      i++;
      if (path && wanted.has(JSON.stringify(path))) for (const key of dup) out.push({ path, key });
    } else if (c === '[') {
      i++;
      for (;;) {
        ws();
        if (text[i] === ']') break;
        if (text[i] === ',') {
          i++;
          continue;
        }
        value(undefined);
      }
      i++;
    } else if (c === '"') {
      str();
    } else {
      while (i < text.length && !',}] \t\n\r'.includes(text[i]!)) i++;
    }
  };
  try {
    value([]);
  } catch {
    // Not valid JSON: the config parser reports that.
  }
  return out;
}
