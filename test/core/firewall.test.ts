// The firewall plugin's core: config validation (bad input refused with the field named), the desired rules
// byte for byte as the reference writes them, and plan over the memory twin: ADD from nothing, a second
// attachment, DEL leaving the shared chains, foreign rules (the administrator's) never touched. Also the
// shared-chain op the plugin needs (chain.add: `-N`, retried without when the chain exists meanwhile).

import * as E from 'fp-ts/lib/Either.js';
import { describe, expect, it } from 'vitest';
import { explain, invocations, restoreLines, steps } from '../../adapters/kernel/render.ts';
import { memoryKernel } from '../../adapters/memory/kernel.ts';
import type { NetConf } from '../../core/cni/env.ts';
import { parseFirewallConf, type FirewallConf } from '../../core/firewall/config.ts';
import { attachmentScope, firewallDesired, toPlan } from '../../core/firewall/desired.ts';
import { emptyKernelState, HOST, type IptFamily, type KernelState } from '../../core/kernel/model.ts';
import { drift, plan } from '../../core/kernel/plan.ts';

const netconf = (extra: Record<string, unknown>): NetConf => {
  const raw = { cniVersion: '1.0.0', name: 'fwnet', type: 'firewall', ...extra };
  return { cniVersion: '1.0.0', name: 'fwnet', type: 'firewall', raw };
};

const prev = (ips: string[], bridge = 'cni0') => ({
  cniVersion: '1.0.0',
  interfaces: [{ name: bridge }, { name: 'veth1234abcd' }, { name: 'eth0', sandbox: '/var/run/netns/p' }],
  ips: ips.map((address) => ({ address, interface: 2 })),
});

const conf = (extra: Record<string, unknown>, command: 'ADD' | 'DEL' | 'CHECK' = 'ADD'): FirewallConf => {
  const c = parseFirewallConf(netconf(extra), command);
  if (E.isLeft(c)) throw new Error(c.left.msg);
  return c.right;
};

const refused = (extra: Record<string, unknown>, command: 'ADD' | 'DEL' | 'CHECK' = 'ADD'): { code: number; msg: string } => {
  const c = parseFirewallConf(netconf(extra), command);
  if (E.isRight(c)) throw new Error('accepted');
  return c.left;
};

/** A family's filter table as iptables-save lists it (builtin FORWARD first, then user chains by name). */
function save(s: KernelState, family: IptFamily): string[] {
  const out: string[] = [];
  const chains = s.chains.filter((c) => c.family === family && c.table === 'filter').sort((a, b) => (a.chain < b.chain ? -1 : 1));
  for (const c of chains) out.push(`:${c.chain}`);
  for (const r of s.rules.filter((r) => r.family === family && r.table === 'filter')) out.push(`-A ${r.chain} ${r.rule}`);
  for (const c of chains) for (const r of c.rules) out.push(`-A ${c.chain} ${r}`);
  return out;
}

// What /usr/lib/cni/firewall (v1.1.1) leaves for 10.9.0.5 on cnib0 with same-bridge (iptables-save -t filter).
const REF_SAME_BRIDGE = [
  ':CNI-ADMIN',
  ':CNI-FORWARD',
  ':CNI-ISOLATION-STAGE-1',
  ':CNI-ISOLATION-STAGE-2',
  '-A FORWARD -m comment --comment "CNI firewall plugin rules (ingressPolicy: same-bridge)" -j CNI-ISOLATION-STAGE-1',
  '-A FORWARD -m comment --comment "CNI firewall plugin rules" -j CNI-FORWARD',
  '-A CNI-FORWARD -m comment --comment "CNI firewall plugin admin overrides" -j CNI-ADMIN',
  '-A CNI-FORWARD -d 10.9.0.5/32 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT',
  '-A CNI-FORWARD -s 10.9.0.5/32 -j ACCEPT',
  '-A CNI-ISOLATION-STAGE-1 -i cnib0 ! -o cnib0 -m comment --comment "CNI firewall plugin rules (ingressPolicy: same-bridge)" -j CNI-ISOLATION-STAGE-2',
  '-A CNI-ISOLATION-STAGE-1 -m comment --comment "CNI firewall plugin rules (ingressPolicy: same-bridge)" -j RETURN',
  '-A CNI-ISOLATION-STAGE-2 -o cnib0 -m comment --comment "CNI firewall plugin rules (ingressPolicy: same-bridge)" -j DROP',
  '-A CNI-ISOLATION-STAGE-2 -m comment --comment "CNI firewall plugin rules (ingressPolicy: same-bridge)" -j RETURN',
];

describe('parseFirewallConf', () => {
  it('defaults: no backend (the host decides, apps/cni/netfilter.ts), CNI-ADMIN, open', () => {
    const c = conf({ prevResult: prev(['10.9.0.5/24']) });
    expect(c).toMatchObject({ adminChain: 'CNI-ADMIN', ingressPolicy: 'open' });
    expect(c.backend).toBeUndefined();
    expect(conf({ backend: 'nftables', prevResult: prev(['10.9.0.5/24']) }).backend).toBe('nftables');
    expect(c.prevResult?.ips).toEqual([{ address: '10.9.0.5/24', interface: 2 }]);
  });

  it('accepts every option the reference has', () => {
    const c = conf({
      backend: 'iptables',
      iptablesAdminChainName: 'MY-ADMIN',
      firewalldZone: 'trusted',
      ingressPolicy: 'isolated',
      prevResult: prev(['10.9.0.5/24']),
    });
    expect(c).toMatchObject({ adminChain: 'MY-ADMIN', ingressPolicy: 'isolated' });
  });

  it.each([
    [{ backend: 'firewalld' }, /^backend: "firewalld" is not supported/],
    [{ backend: 'pf' }, /^backend: unknown backend "pf"/],
    [{ backend: 3 }, /^backend: unknown backend 3/],
    [{ ingressPolicy: 'bogus' }, /^ingressPolicy: unknown ingress policy "bogus" \("open", "same-bridge", "isolated"\)/],
    [{ ingressPolicy: true }, /^ingressPolicy: unknown ingress policy true/],
    [{ iptablesAdminChainName: 'A'.repeat(29) }, /^iptablesAdminChainName: "A+" is longer than 28 characters/],
    [{ iptablesAdminChainName: 'two words' }, /^iptablesAdminChainName: "two words" must be one word/],
    [{ iptablesAdminChainName: '-j' }, /^iptablesAdminChainName: "-j" must be one word/],
    [{ iptablesAdminChainName: 'FORWARD' }, /^iptablesAdminChainName: "FORWARD" names a builtin chain/],
    [{ iptablesAdminChainName: 'CNI-FORWARD' }, /^iptablesAdminChainName: "CNI-FORWARD" names a builtin chain/],
    [{ iptablesAdminChainName: 7 }, /^iptablesAdminChainName: must be a string/],
    [{ firewalldZone: 1 }, /^firewalldZone: must be a string/],
  ])('refuses %j with code 7 naming the field', (extra, msg) => {
    const e = refused({ ...extra, prevResult: prev(['10.9.0.5/24']) });
    expect(e.code).toBe(7);
    expect(e.msg).toMatch(msg);
  });

  it('ADD and CHECK need prevResult; DEL does not', () => {
    expect(refused({}, 'ADD')).toEqual({ code: 7, msg: expect.stringMatching(/^prevResult: missing prevResult from earlier plugin/) });
    expect(refused({}, 'CHECK').msg).toMatch(/^prevResult: missing/);
    expect(conf({}, 'DEL').prevResult).toBeUndefined();
  });

  it('a prevResult that does not parse is refused naming its field', () => {
    expect(refused({ prevResult: { cniVersion: '1.0.0', ips: [{ address: '10.9.0.5/24\n-A x' }] } }).msg).toMatch(
      /^prevResult: ips\[0\]\.address: /,
    );
    expect(refused({ prevResult: 'x' }, 'DEL').msg).toMatch(/^prevResult: must be a JSON object/);
  });

  it('same-bridge and isolated need the bridge as the first interface', () => {
    expect(refused({ ingressPolicy: 'same-bridge', prevResult: { cniVersion: '1.0.0', ips: [{ address: '10.9.0.5/24' }] } }).msg).toMatch(
      /^prevResult\.interfaces\[0\]: ingressPolicy "same-bridge" needs the bridge/,
    );
    expect(refused({ ingressPolicy: 'isolated', prevResult: prev(['10.9.0.5/24'], 'br+') }).msg).toMatch(
      /^prevResult\.interfaces\[0\]\.name: "br\+" ends with '\+'/,
    );
    // DEL does not read the bridge (the isolation rules stay).
    expect(conf({ ingressPolicy: 'same-bridge', prevResult: { cniVersion: '1.0.0' } }, 'DEL').ingressPolicy).toBe('same-bridge');
  });

  it('collects every problem at once', () => {
    expect(
      refused({ backend: 'x', ingressPolicy: 'y' })
        .msg.split('; ')
        .map((m) => m.split(':')[0]),
    ).toEqual(['backend', 'ingressPolicy', 'prevResult']);
  });
});

describe('firewallDesired', () => {
  it('open: the forward jump, the admin jump and the per-address rules, per family with addresses', () => {
    const d = firewallDesired(conf({ prevResult: prev(['10.9.0.5/24', 'fd00:9::5/64']) }));
    expect(d.kernel.rules.map((r) => [r.family, r.chain, r.position, r.rule])).toEqual([
      [4, 'FORWARD', 'head', '-m comment --comment "CNI firewall plugin rules" -j CNI-FORWARD'],
      [4, 'CNI-FORWARD', 'head', '-m comment --comment "CNI firewall plugin admin overrides" -j CNI-ADMIN'],
      [4, 'CNI-FORWARD', 'tail', '-d 10.9.0.5/32 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT'],
      [4, 'CNI-FORWARD', 'tail', '-s 10.9.0.5/32 -j ACCEPT'],
      [6, 'FORWARD', 'head', '-m comment --comment "CNI firewall plugin rules" -j CNI-FORWARD'],
      [6, 'CNI-FORWARD', 'head', '-m comment --comment "CNI firewall plugin admin overrides" -j CNI-ADMIN'],
      [6, 'CNI-FORWARD', 'tail', '-d fd00:9::5/128 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT'],
      [6, 'CNI-FORWARD', 'tail', '-s fd00:9::5/128 -j ACCEPT'],
    ]);
    expect(d.kernel.chains).toEqual([]);
    expect(d.kernel.rules.every((r) => r.ns === HOST && r.table === 'filter')).toBe(true);
  });

  it('the attachment owns only its address rules', () => {
    const d = firewallDesired(conf({ ingressPolicy: 'same-bridge', prevResult: prev(['10.9.0.5/24']) }));
    expect(d.scope).toEqual(attachmentScope([{ address: '10.9.0.5/24' }]));
    expect(d.scope.ruleMarkers.map((m) => m.marker)).toEqual([
      '-d 10.9.0.5/32 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT',
      '-s 10.9.0.5/32 -j ACCEPT',
    ]);
    expect(d.scope.chains).toEqual([]);
  });

  it('a custom admin chain', () => {
    const d = firewallDesired(conf({ iptablesAdminChainName: 'MY-ADMIN', prevResult: prev(['10.9.0.5/24']) }));
    expect(d.kernel.rules[1]).toMatchObject({
      rule: '-m comment --comment "CNI firewall plugin admin overrides" -j MY-ADMIN',
      ensureTarget: true,
    });
  });

  it('no addresses: nothing', () => {
    expect(firewallDesired(conf({ ingressPolicy: 'same-bridge', prevResult: prev([]) })).kernel.rules).toEqual([]);
  });

  it('isolated adds the same-bridge DROP (v1.2.0)', () => {
    const rules = firewallDesired(conf({ ingressPolicy: 'isolated', prevResult: prev(['10.9.0.5/24'], 'cnib0') })).kernel.rules.filter(
      (r) => r.chain === 'CNI-ISOLATION-STAGE-1',
    );
    expect(rules.map((r) => r.rule)).toEqual([
      '-i cnib0 ! -o cnib0 -m comment --comment "CNI firewall plugin rules (ingressPolicy: isolated)" -j CNI-ISOLATION-STAGE-2',
      '-i cnib0 -o cnib0 -m comment --comment "CNI firewall plugin rules (ingressPolicy: isolated)" -j DROP',
      '-m comment --comment "CNI firewall plugin rules (ingressPolicy: same-bridge)" -j RETURN',
    ]);
  });
});

describe('plan over the twin', () => {
  const add = (c: FirewallConf, k = memoryKernel()) => {
    const d = firewallDesired(c);
    const ops = plan(d.kernel, k.state(), d.scope);
    const r = k.applySync(ops);
    if (E.isLeft(r)) throw new Error(r.left.msg);
    return { k, ops, d };
  };

  it('ADD from nothing makes what the reference makes, in its order', () => {
    const { k, ops } = add(conf({ ingressPolicy: 'same-bridge', prevResult: prev(['10.9.0.5/24'], 'cnib0') }));
    expect(ops.filter((o) => o.op === 'chain.add').map((o) => (o.op === 'chain.add' ? o.chain : ''))).toEqual([
      'CNI-FORWARD',
      'CNI-ADMIN',
      'CNI-ISOLATION-STAGE-1',
      'CNI-ISOLATION-STAGE-2',
    ]);
    expect(save(k.state(), 4)).toEqual(REF_SAME_BRIDGE);
    expect(save(k.state(), 6)).toEqual([]);
  });

  it('a resync with nothing to do applies nothing; CHECK finds no drift', () => {
    const c = conf({ ingressPolicy: 'isolated', prevResult: prev(['10.9.0.5/24', 'fd00:9::5/64']) });
    const { k, d } = add(c);
    expect(plan(d.kernel, k.state(), d.scope)).toEqual([]);
    expect(drift(d.kernel, k.state(), d.scope)).toEqual([]);
  });

  it('a second pod adds only its address rules; a second bridge goes to the head of the isolation chains', () => {
    const { k } = add(conf({ ingressPolicy: 'same-bridge', prevResult: prev(['10.9.0.5/24'], 'cnib0') }));
    const second = add(conf({ ingressPolicy: 'same-bridge', prevResult: prev(['10.9.0.6/24'], 'cnib0') }), k);
    expect(second.ops.map((o) => o.op)).toEqual(['rule.add', 'rule.add']);
    add(conf({ ingressPolicy: 'same-bridge', prevResult: prev(['10.8.0.5/24'], 'cnib1') }), k);
    const s = save(k.state(), 4);
    expect(s.filter((l) => l.startsWith('-A CNI-ISOLATION-STAGE-1'))).toEqual([
      '-A CNI-ISOLATION-STAGE-1 -i cnib1 ! -o cnib1 -m comment --comment "CNI firewall plugin rules (ingressPolicy: same-bridge)" -j CNI-ISOLATION-STAGE-2',
      '-A CNI-ISOLATION-STAGE-1 -i cnib0 ! -o cnib0 -m comment --comment "CNI firewall plugin rules (ingressPolicy: same-bridge)" -j CNI-ISOLATION-STAGE-2',
      '-A CNI-ISOLATION-STAGE-1 -m comment --comment "CNI firewall plugin rules (ingressPolicy: same-bridge)" -j RETURN',
    ]);
    expect(s.filter((l) => l.startsWith('-A FORWARD'))).toHaveLength(2);
  });

  it('DEL removes exactly the address rules; the shared chains, the jumps and foreign rules stay; twice is harmless', () => {
    const c = conf({ ingressPolicy: 'same-bridge', prevResult: prev(['10.9.0.5/24', 'fd00:9::5/64'], 'cnib0') });
    const { k } = add(c);
    add(conf({ prevResult: prev(['10.9.0.6/24']) }), k);
    // The administrator's rule in CNI-ADMIN, and one of their own in CNI-FORWARD.
    k.applySync([
      { op: 'rule.add', rule: { ns: HOST, family: 4, table: 'filter', chain: 'CNI-ADMIN', rule: '-s 10.9.0.5/32 -j DROP' } },
      { op: 'rule.add', rule: { ns: HOST, family: 4, table: 'filter', chain: 'CNI-FORWARD', rule: '-s 10.9.0.50/32 -j ACCEPT' } },
    ]);
    const before = save(k.state(), 4);
    const scope = attachmentScope(c.prevResult?.ips ?? []);
    const ops = plan(emptyKernelState(), k.state(), scope);
    expect(ops.map((o) => o.op)).toEqual(['rule.del', 'rule.del', 'rule.del', 'rule.del']);
    expect(E.isRight(k.applySync(ops))).toBe(true);
    expect(save(k.state(), 4)).toEqual(
      before.filter((l) => !l.includes('10.9.0.5/32 -m conntrack') && l !== '-A CNI-FORWARD -s 10.9.0.5/32 -j ACCEPT'),
    );
    expect(save(k.state(), 4)).toContain('-A CNI-ADMIN -s 10.9.0.5/32 -j DROP');
    expect(save(k.state(), 6)).toEqual([
      ':CNI-ADMIN',
      ':CNI-FORWARD',
      ':CNI-ISOLATION-STAGE-1',
      ':CNI-ISOLATION-STAGE-2',
      ...REF_SAME_BRIDGE.slice(4).filter((l) => !l.includes('10.9.0.5')),
    ]);
    expect(plan(emptyKernelState(), k.state(), scope)).toEqual([]);
  });

  it('shared rules are only ever added: a duplicated jump (two ADDs racing on a fresh node) stays', () => {
    const c = conf({ ingressPolicy: 'same-bridge', prevResult: prev(['10.9.0.5/24'], 'cnib0') });
    const { k, d } = add(c);
    const jump = d.kernel.rules[0]!;
    k.applySync([{ op: 'rule.add', rule: jump }]);
    const seen = k.state();
    // Plain plan would remove the extra copy (and two racing removals could remove both).
    expect(plan(d.kernel, seen, d.scope)).toEqual([
      { op: 'rule.del', rule: { ns: HOST, family: 4, table: 'filter', chain: 'FORWARD', rule: jump.rule } },
    ]);
    expect(plan(toPlan(d, seen), seen, d.scope)).toEqual([]);
    expect(drift(toPlan(d, seen), seen, d.scope)).toEqual([]);
    // Its own address rules are still planned (and a missing shared jump is still added).
    const bare: KernelState = {
      ...seen,
      rules: [],
      chains: seen.chains.map((x) => (x.chain === 'CNI-FORWARD' ? { ...x, rules: x.rules.slice(0, 1) } : x)),
    };
    expect(plan(toPlan(d, bare), bare, d.scope).map((o) => (o.op === 'rule.add' ? `${o.rule.chain} ${o.rule.rule}` : o.op))).toEqual([
      'FORWARD -m comment --comment "CNI firewall plugin rules" -j CNI-FORWARD',
      'CNI-FORWARD -d 10.9.0.5/32 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT',
      'CNI-FORWARD -s 10.9.0.5/32 -j ACCEPT',
      'FORWARD -m comment --comment "CNI firewall plugin rules (ingressPolicy: same-bridge)" -j CNI-ISOLATION-STAGE-1',
    ]);
  });

  it('CHECK names what is missing: a shared chain, a jump, an address rule', () => {
    const c = conf({ prevResult: prev(['10.9.0.5/24']) });
    const { k, d } = add(c);
    const seen = k.state();
    const noAdmin: KernelState = {
      ...seen,
      chains: seen.chains.filter((x) => x.chain !== 'CNI-ADMIN'),
      rules: [],
    };
    expect(drift(d.kernel, noAdmin, d.scope)).toEqual([
      'missing iptables chain filter/CNI-ADMIN in the host namespace',
      'missing iptables rule in filter/FORWARD: -m comment --comment "CNI firewall plugin rules" -j CNI-FORWARD',
    ]);
  });
});

describe('chain.add (shared chains)', () => {
  const op = { op: 'chain.add', ns: HOST, family: 4, table: 'filter', chain: 'CNI-FORWARD' } as const;
  const rule = {
    op: 'rule.add',
    rule: { ns: HOST, family: 4, table: 'filter', chain: 'CNI-FORWARD', rule: '-s 10.9.0.5/32 -j ACCEPT' },
  } as const;

  it('is rendered as -N after the declarations, before the rules (never as a flushing declaration)', () => {
    const sync = { op: 'chain.sync', chain: { ns: HOST, family: 4, table: 'filter', chain: 'OWN', rules: ['-j RETURN'] } } as const;
    expect(restoreLines([rule, op, sync]).map((l) => l.text)).toEqual([
      '*filter',
      ':OWN - [0:0]',
      '-N CNI-FORWARD',
      '-A CNI-FORWARD -s 10.9.0.5/32 -j ACCEPT',
      '-A OWN -j RETURN',
      'COMMIT',
    ]);
  });

  it('a chain made meanwhile by someone else: the restore runs again without the -N', () => {
    const [step] = steps([op, rule], { pid: 1 });
    const [inv] = invocations(step!, { pid: 1 });
    const v = explain(step!, inv!, 1, 'iptables-restore: line 2 failed: Chain already exists.\n');
    expect(v.kind).toBe('retry');
    expect(v.kind === 'retry' && v.step.lines.map((l) => l.text)).toEqual(['*filter', '-A CNI-FORWARD -s 10.9.0.5/32 -j ACCEPT', 'COMMIT']);
  });

  it('plan creates only chains that are missing, and never syncs or deletes them', () => {
    const d = firewallDesired(conf({ prevResult: prev(['10.9.0.5/24']) }));
    const k = memoryKernel();
    k.applySync([op, { op: 'rule.add', rule: { ...rule.rule, rule: '-s 192.0.2.1/32 -j ACCEPT' } }]);
    const ops = plan(d.kernel, k.state(), d.scope);
    expect(ops.filter((o) => o.op.startsWith('chain.'))).toEqual([
      { op: 'chain.add', ns: HOST, family: 4, table: 'filter', chain: 'CNI-ADMIN' },
    ]);
  });
});
