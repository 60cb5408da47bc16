import { describe, expect, it } from 'vitest';
import { delta, missing } from '../../core/kernel/delta.ts';

interface E {
  readonly k: string;
  readonly v: number;
  readonly mine?: boolean;
}
const kind = { key: (e: E) => e.k, same: (d: E, o: E) => d.v === o.v, owned: (e: E) => !!e.mine };

describe('the keyed delta', () => {
  it('matches by key, keeps what satisfies, and removes only owned entries nothing desires', () => {
    const d = delta(
      [
        { k: 'a', v: 1 },
        { k: 'b', v: 2 },
        { k: 'c', v: 3 },
        { k: 'a', v: 9 },
      ],
      [
        { k: 'a', v: 1 },
        { k: 'b', v: 5 },
        { k: 'x', v: 0, mine: true },
        { k: 'y', v: 0 },
      ],
      kind,
    );
    expect(missing(d)).toEqual([
      { k: 'b', v: 2 },
      { k: 'c', v: 3 },
    ]);
    expect(d.matches.map((m) => m.stale)).toEqual([[], [{ k: 'b', v: 5 }], []]);
    expect(d.unwanted).toEqual([{ k: 'x', v: 0, mine: true }]);
  });
  it('reports further satisfying copies as extra, in observed order', () => {
    const d = delta(
      [{ k: 'a', v: 1 }],
      [
        { k: 'a', v: 1, mine: true },
        { k: 'a', v: 2 },
        { k: 'a', v: 1 },
      ],
      kind,
    );
    expect(d.matches[0]).toEqual({
      want: { k: 'a', v: 1 },
      have: { k: 'a', v: 1, mine: true },
      stale: [{ k: 'a', v: 2 }],
      extra: [{ k: 'a', v: 1 }],
    });
  });
  it('is empty against itself', () => {
    const s = [
      { k: 'a', v: 1, mine: true },
      { k: 'b', v: 2, mine: true },
    ];
    const d = delta(s, s, kind);
    expect(missing(d)).toEqual([]);
    expect(d.unwanted).toEqual([]);
  });
});
