// Table projections inside a store transaction, shared by the SQLite store and its in-memory twin: the rows
// the stream's events change are kept in an overlay over the stored rows (read on demand, by key or by the
// secondary index), so a decision reads only what it looks up and the commit writes only what changed.

import type { Event, RowView, Stored, Table } from '../../core/events.ts';

/** The stored rows of one (projection, stream), as of the stored header's position. */
export interface RowSource<R> {
  get(key: string): R | undefined;
  /** Rows whose index value is `value` (any order). */
  find(value: string): readonly (readonly [string, R])[];
  /** Every row (any order). */
  all(): readonly (readonly [string, R])[];
}

const byKey = (a: readonly [string, unknown], b: readonly [string, unknown]): number => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0);

/** The stored header and rows with a transaction's changes on top; a RowView for deciders and `changes`. */
export class Overlay<H, R> implements RowView<H, R> {
  /** Changed rows: the new row, or null when deleted. */
  readonly pending = new Map<string, R | null>();
  header: H;
  rows: number;

  constructor(
    private readonly table: Table<unknown, H, R, never>,
    private readonly base: RowSource<R>,
    header: H,
    count: number,
  ) {
    this.header = header;
    this.rows = count;
  }

  get(key: string): R | undefined {
    if (this.pending.has(key)) return this.pending.get(key) ?? undefined;
    return this.base.get(key);
  }

  find(value: string): R[] {
    return this.merge(this.base.find(value), value).map(([, r]) => r);
  }

  count(): number {
    return this.rows;
  }

  all(): R[] {
    return this.entries().map(([, r]) => r);
  }

  /** Every row with its key, in key order. */
  entries(): [string, R][] {
    return this.merge(this.base.all(), undefined);
  }

  /** Fold one event into the overlay through the table's `changes`. */
  apply(event: Stored<Event>): void {
    for (const c of this.table.changes(this, event as never)) {
      if (c.op === 'header') this.header = c.header;
      else if (c.op === 'put') {
        if (this.get(c.key) === undefined) this.rows++;
        this.pending.set(c.key, c.row);
      } else {
        if (this.get(c.key) !== undefined) this.rows--;
        this.pending.set(c.key, null);
      }
    }
  }

  private merge(stored: readonly (readonly [string, R])[], value: string | undefined): [string, R][] {
    const out = new Map<string, R>();
    for (const [k, r] of stored) if (!this.pending.has(k)) out.set(k, r);
    for (const [k, r] of this.pending) if (r !== null && (value === undefined || this.table.index?.(r) === value)) out.set(k, r);
    return [...out].sort(byKey);
  }
}

/** The JSON kept in the snapshot row of a table projection: its header and row count. */
export interface TableHead<H> {
  readonly header: H;
  readonly count: number;
}
