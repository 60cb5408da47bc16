// Does this kernel have a link type? Kernels built without ipvlan, vlan, vrf or dummy answer `ip link add ... type X`
// with "Error: Unknown device type."; kernel tests for those plugins then skip, with that reason printed.

import { nsRun, nsTry, type Sandbox } from './ns.ts';

const PROBES = {
  ipvlan: ['ip', 'link', 'add', 'link', 'probe0', 'name', 'probe1', 'type', 'ipvlan', 'mode', 'l2'],
  vlan: ['ip', 'link', 'add', 'link', 'probe0', 'name', 'probe1', 'type', 'vlan', 'id', '5'],
  vrf: ['ip', 'link', 'add', 'name', 'probe1', 'type', 'vrf', 'table', '10'],
  dummy: ['ip', 'link', 'add', 'name', 'probe1', 'type', 'dummy'],
} as const;

/** Why `type` links cannot be made here (undefined: they can), tried in a throwaway namespace. */
export async function linkTypeMissing(sb: Sandbox, type: keyof typeof PROBES): Promise<string | undefined> {
  const ns = await sb.ns();
  try {
    await nsRun(ns, ['ip', 'link', 'add', 'name', 'probe0', 'type', 'veth', 'peer', 'name', 'probe0p']);
    const r = await nsTry(ns, PROBES[type]);
    return r.code === 0
      ? undefined
      : `this kernel cannot make ${type} links (\`${PROBES[type].join(' ')}\`: ${(r.stderr || r.stdout).trim()})`;
  } finally {
    await sb.delNs(ns);
  }
}
