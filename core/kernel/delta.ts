// One keyed delta for every kind of kernel object (felix's delta tracker, as a pure function): desired entries
// against observed ones, matched by identity (keys.ts), touching only what felt owns.
//
// For each desired entry: the first observed entry with its key that satisfies it (`have`; none means it must
// be written), the observed entries with its key that do not satisfy it (`stale`) and further copies that do
// (`extra`). Observed entries whose key nothing desires are `unwanted` when felt owns them (in observed order);
// the rest are foreign and never appear. Desired arrays are sets: the first of each key wins.

export interface DeltaKind<T> {
  /** Identity: two entries with the same key are the same object. */
  readonly key: (x: T) => string;
  /** Does the observed entry satisfy the desired one as it is (nothing to write)? */
  readonly same: (want: T, have: T) => boolean;
  /** May plan remove this observed entry when nothing desires its key? */
  readonly owned: (have: T) => boolean;
}

interface DeltaMatch<T> {
  readonly want: T;
  /** The observed entry that satisfies `want`, if any. */
  readonly have: T | undefined;
  /** Observed entries with want's key that do not satisfy it, in observed order. */
  readonly stale: readonly T[];
  /** Further observed copies that satisfy it (after `have`), in observed order. */
  readonly extra: readonly T[];
}

export interface Delta<T> {
  /** One per distinct desired key, in desired order. */
  readonly matches: readonly DeltaMatch<T>[];
  /** Owned observed entries with no desired key, in observed order. */
  readonly unwanted: readonly T[];
}

/** First of each identity wins; later duplicates are ignored (desired arrays are sets). */
export function uniq<T>(xs: readonly T[], key: (x: T) => string): T[] {
  const seen = new Set<string>();
  return xs.filter((x) => {
    const k = key(x);
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

export function delta<T>(desired: readonly T[], observed: readonly T[], kind: DeltaKind<T>): Delta<T> {
  const groups = new Map<string, T[]>();
  // Each observed key is computed once (a host with many pods observes hundreds of entries per kind, per call).
  const keys = new Array<string>(observed.length);
  for (let i = 0; i < observed.length; i++) {
    const o = observed[i]!;
    const k = (keys[i] = kind.key(o));
    const g = groups.get(k);
    if (g) g.push(o);
    else groups.set(k, [o]);
  }
  const wanted = new Set<string>();
  const matches: DeltaMatch<T>[] = [];
  for (const want of desired) {
    const k = kind.key(want);
    if (wanted.has(k)) continue;
    wanted.add(k);
    let have: T | undefined;
    const stale: T[] = [];
    const extra: T[] = [];
    for (const o of groups.get(k) ?? []) {
      if (!kind.same(want, o)) stale.push(o);
      else if (have === undefined) have = o;
      else extra.push(o);
    }
    matches.push({ want, have, stale, extra });
  }
  const unwanted = observed.filter((o, i) => !wanted.has(keys[i]!) && kind.owned(o));
  return { matches, unwanted };
}

/** The desired entries that must be written: no observed entry satisfies them. */
export const missing = <T>(d: Delta<T>): T[] => d.matches.flatMap((m) => (m.have === undefined ? [m.want] : []));
