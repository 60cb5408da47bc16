// Reading JSON the way Go's encoding/json fills a struct: object keys match field names case-insensitively,
// and when a key appears twice (in any spelling) the last one wins. Values keep their JSON types; the callers
// check them and name the key at fault.

export type JsonObject = Readonly<Record<string, unknown>>;

export const isObject = (v: unknown): v is JsonObject => typeof v === 'object' && v !== null && !Array.isArray(v);

export interface Fields {
  /** The value of the field `name` (any letter case), or undefined when absent. */
  get(name: string): unknown;
  /** Whether the field is present (a JSON null counts as present). */
  has(name: string): boolean;
  /** Keys that match none of `known`, as written. */
  unknown(known: readonly string[]): string[];
}

export function fields(o: JsonObject): Fields {
  const byLower = new Map<string, unknown>();
  for (const [k, v] of Object.entries(o)) byLower.set(k.toLowerCase(), v);
  return {
    get: (name) => byLower.get(name.toLowerCase()),
    has: (name) => byLower.has(name.toLowerCase()),
    unknown: (known) => {
      const k = new Set(known.map((x) => x.toLowerCase()));
      return Object.keys(o).filter((x) => !k.has(x.toLowerCase()));
    },
  };
}

export const typeOf = (v: unknown): string => (v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v);

export function parseJson(text: string, what: string): { ok: true; value: unknown } | { ok: false; error: string } {
  try {
    return { ok: true, value: JSON.parse(text) as unknown };
  } catch (e) {
    return { ok: false, error: `${what}: invalid JSON: ${e instanceof Error ? e.message : String(e)}` };
  }
}
