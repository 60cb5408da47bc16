// nftables for the kernel adapter: ops as `nft -j DOC` commands (render.ts: why not stdin) (JSON: every value is one JSON string or
// number, so no value can add a command, a statement or a token), and `nft -j list table` output parsed back
// into NftTable / NftChain / NftRule records.
//
// One exception to JSON: nft 1.0.x reads (and prints) no comments of tables and chains in JSON, and the
// reference plugins give theirs one. Table and chain declarations that carry a comment are also written as
// one `nft -f -` text line each, run before the JSON batch (adding an existing table or chain is a no-op);
// those lines hold only names and comments that pass `textSafe` (letters, digits and a few punctuation marks,
// no quote, semicolon, brace or line break), and felt refuses any other.

import type { KernelState, NftBase, NftChain, NftFamily, NftJson, NftRule, NftSet, NftTable, NsRef, Op } from '../../core/kernel/model.ts';

export type NftOp = Extract<Op, { op: `nft.${string}` }>;
export const isNft = (o: Op): o is NftOp => o.op.startsWith('nft.');

const NAME = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,255}$/;
const COMMENT = /^[A-Za-z0-9 _.,:()/+-]{0,128}$/;

/** Why an nft op cannot be rendered, or undefined. Names must be plain words; values inside JSON are safe. */
export function nftUnsafe(o: NftOp): string | undefined {
  const names: string[] = [];
  switch (o.op) {
    case 'nft.table.add':
      names.push(o.table.name);
      if (o.table.comment !== undefined && !COMMENT.test(o.table.comment))
        return `nftables table comment ${JSON.stringify(o.table.comment)} is not plain text`;
      break;
    case 'nft.table.del':
      names.push(o.name);
      break;
    case 'nft.chain.add':
    case 'nft.chain.sync':
      names.push(o.chain.table, o.chain.name);
      if (o.chain.comment !== undefined && !COMMENT.test(o.chain.comment))
        return `nftables chain comment ${JSON.stringify(o.chain.comment)} is not plain text`;
      break;
    case 'nft.chain.del':
      names.push(o.table, o.chain);
      break;
    case 'nft.rule.add':
    case 'nft.rule.del':
      names.push(o.rule.table, o.rule.chain);
      break;
    case 'nft.set.add':
    case 'nft.set.elements':
      names.push(o.set.table, o.set.name);
      break;
  }
  const bad = names.find((n) => !NAME.test(n));
  return bad === undefined ? undefined : `nftables name ${JSON.stringify(bad)} is not one word`;
}

const baseOf = (b: NftBase | undefined): Record<string, NftJson> =>
  b ? { type: b.type, hook: b.hook, prio: b.prio, policy: b.policy ?? 'accept' } : {};

const chainObj = (c: NftChain): Record<string, NftJson> => ({ family: c.family, table: c.table, name: c.name, ...baseOf(c.base) });

const ruleObj = (r: {
  family: NftFamily;
  table: string;
  chain: string;
  expr: readonly NftJson[];
  comment?: string;
}): Record<string, NftJson> => ({
  family: r.family,
  table: r.table,
  chain: r.chain,
  ...(r.comment !== undefined ? { comment: r.comment } : {}),
  expr: r.expr,
});

/** A set element as nft -j writes and prints it: a prefix, or a plain address for a full-length one. */
function elemJson(cidr: string): NftJson {
  const i = cidr.indexOf('/');
  const ip = i < 0 ? cidr : cidr.slice(0, i);
  const len = i < 0 ? undefined : Number(cidr.slice(i + 1));
  const full = ip.includes(':') ? 128 : 32;
  return len === undefined || len === full ? ip : { prefix: { addr: ip, len } };
}
/** Elements per command: one argument of nft holds at most 128 KiB (render.ts), a command must fit in one. */
const ELEMS_PER_COMMAND = 1000;
function elementCommands(verb: 'add' | 'delete', s: { family: NftFamily; table: string; name: string }, els: readonly string[]): NftJson[] {
  const out: NftJson[] = [];
  for (let i = 0; i < els.length; i += ELEMS_PER_COMMAND) {
    out.push({
      [verb]: { element: { family: s.family, table: s.table, name: s.name, elem: els.slice(i, i + ELEMS_PER_COMMAND).map(elemJson) } },
    });
  }
  return out;
}

/** The JSON commands of one op, in order. */
export function nftCommands(o: NftOp): NftJson[] {
  switch (o.op) {
    case 'nft.table.add':
      return [{ add: { table: { family: o.table.family, name: o.table.name } } }];
    case 'nft.table.del':
      // Adding first makes deleting a table that is gone meanwhile harmless (the idiom of `nft -f`).
      return [{ add: { table: { family: o.family, name: o.name } } }, { delete: { table: { family: o.family, name: o.name } } }];
    case 'nft.chain.add':
      return [{ add: { chain: chainObj(o.chain) } }];
    case 'nft.chain.sync':
      return [
        { add: { chain: chainObj(o.chain) } },
        { flush: { chain: { family: o.chain.family, table: o.chain.table, name: o.chain.name } } },
        ...o.chain.rules.map((r) => ({ add: { rule: ruleObj({ ...o.chain, chain: o.chain.name, ...r }) } })),
      ];
    case 'nft.chain.del': {
      const ref = { family: o.family, table: o.table, name: o.chain };
      return [{ add: { chain: ref } }, { delete: { chain: ref } }];
    }
    case 'nft.rule.add':
      return [{ add: { rule: ruleObj(o.rule) } }];
    case 'nft.rule.del':
      return [{ delete: { rule: { family: o.rule.family, table: o.rule.table, chain: o.rule.chain, handle: o.rule.handle } } }];
    case 'nft.set.add':
      return [
        { add: { set: { family: o.set.family, table: o.set.table, name: o.set.name, type: o.set.type, flags: [...o.set.flags] } } },
        ...elementCommands('add', o.set, o.set.elements),
      ];
    case 'nft.set.elements':
      // Deleting an element that is gone fails the transaction: adding it first makes the deletion harmless.
      return [...elementCommands('add', o.set, o.del), ...elementCommands('delete', o.set, o.del), ...elementCommands('add', o.set, o.add)];
  }
}

/** The `nft -f` text declarations that give tables and chains their comments (see the head of this file). */
export function nftCommentLine(o: NftOp): string | undefined {
  if (o.op === 'nft.table.add' && o.table.comment !== undefined)
    return `add table ${o.table.family} ${o.table.name} { comment "${o.table.comment}" ; }`;
  if ((o.op === 'nft.chain.add' || o.op === 'nft.chain.sync') && o.chain.comment !== undefined) {
    const c = o.chain;
    const base = c.base ? ` type ${c.base.type} hook ${c.base.hook} priority ${c.base.prio} ; policy ${c.base.policy ?? 'accept'} ;` : '';
    return `add chain ${c.family} ${c.table} ${c.name} {${base} comment "${c.comment}" ; }`;
  }
  return undefined;
}

/** One JSON document of commands. */
export const nftDocument = (commands: readonly string[]): string => `{"nftables":[${commands.join(',')}]}`;

// ---------------------------------------------------------------------------------------------- reading

const FAMILIES: ReadonlySet<string> = new Set(['ip', 'ip6', 'inet']);
const HOOKS: ReadonlySet<string> = new Set(['prerouting', 'input', 'forward', 'output', 'postrouting']);
const TYPES: ReadonlySet<string> = new Set(['filter', 'nat', 'route']);

type NftRead = Required<Pick<KernelState, 'nftTables' | 'nftChains' | 'nftRules' | 'nftSets'>>;

/** An element as nft -j prints it, as a canonical CIDR (undefined for what felt never writes: ranges, ...). */
function elemCidr(e: unknown): string | undefined {
  const v = (e as { elem?: { val?: unknown } })?.elem?.val ?? e;
  if (typeof v === 'string') return `${v}/${v.includes(':') ? 128 : 32}`;
  const p = (v as { prefix?: { addr?: unknown; len?: unknown } })?.prefix;
  return p && typeof p.addr === 'string' && typeof p.len === 'number' ? `${p.addr}/${p.len}` : undefined;
}

/** `nft -j list table F T` output as records, or an error text. */
export function parseNftList(ns: NsRef, text: string): NftRead | string {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    return 'nft printed no JSON';
  }
  const items = (doc as { nftables?: unknown })?.nftables;
  if (!Array.isArray(items)) return 'nft printed no "nftables" list';
  const tables: NftTable[] = [];
  const sets: NftSet[] = [];
  const chains: { c: NftChain; rules: NftRule[] }[] = [];
  const rules: NftRule[] = [];
  const byName = new Map<string, { c: NftChain; rules: NftRule[] }>();
  for (const it of items as Record<string, Record<string, unknown>>[]) {
    if (typeof it !== 'object' || it === null) continue;
    if (it['table']) {
      const t = it['table'];
      if (FAMILIES.has(String(t['family'])) && typeof t['name'] === 'string')
        tables.push({ ns, family: t['family'] as NftFamily, name: t['name'] });
    } else if (it['chain']) {
      const c = it['chain'];
      if (!FAMILIES.has(String(c['family'])) || typeof c['table'] !== 'string' || typeof c['name'] !== 'string') continue;
      const base: NftBase | undefined =
        TYPES.has(String(c['type'])) && HOOKS.has(String(c['hook'])) && typeof c['prio'] === 'number'
          ? {
              type: c['type'] as NftBase['type'],
              hook: c['hook'] as NftBase['hook'],
              prio: c['prio'],
              policy: c['policy'] === 'drop' ? 'drop' : 'accept',
            }
          : undefined;
      const rec = {
        c: { ns, family: c['family'] as NftFamily, table: c['table'], name: c['name'], ...(base ? { base } : {}), rules: [] },
        rules: [] as NftRule[],
      };
      chains.push(rec);
      byName.set(`${c['family']} ${c['table']} ${c['name']}`, rec);
    } else if (it['set']) {
      const x = it['set'];
      if (!FAMILIES.has(String(x['family'])) || typeof x['table'] !== 'string' || typeof x['name'] !== 'string') continue;
      if (x['type'] !== 'ipv4_addr' && x['type'] !== 'ipv6_addr') continue;
      const elems = Array.isArray(x['elem']) ? x['elem'].map(elemCidr) : [];
      sets.push({
        ns,
        family: x['family'] as NftFamily,
        table: x['table'],
        name: x['name'],
        type: x['type'],
        flags: Array.isArray(x['flags']) && x['flags'].includes('interval') ? ['interval'] : [],
        elements: elems.filter((e): e is string => e !== undefined),
      });
    } else if (it['rule']) {
      const r = it['rule'];
      if (
        !FAMILIES.has(String(r['family'])) ||
        typeof r['table'] !== 'string' ||
        typeof r['chain'] !== 'string' ||
        !Array.isArray(r['expr'])
      )
        continue;
      const rule: NftRule = {
        ns,
        family: r['family'] as NftFamily,
        table: r['table'],
        chain: r['chain'],
        expr: r['expr'] as NftJson[],
        ...(typeof r['comment'] === 'string' ? { comment: r['comment'] } : {}),
        ...(typeof r['handle'] === 'number' ? { handle: r['handle'] } : {}),
      };
      rules.push(rule);
      byName.get(`${r['family']} ${r['table']} ${r['chain']}`)?.rules.push(rule);
    }
  }
  return {
    nftTables: tables,
    nftChains: chains.map(({ c, rules: rs }) => ({
      ...c,
      rules: rs.map((r) => ({ expr: r.expr, ...(r.comment !== undefined ? { comment: r.comment } : {}) })),
    })),
    nftRules: rules,
    nftSets: sets,
  };
}

/** What nft says when the table listed does not exist (nothing to read). */
export const NFT_NO_TABLE = /No such file or directory/;
