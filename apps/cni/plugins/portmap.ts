// portmap: forward host ports to a container (chained after an interface plugin), with the reference
// plugin's iptables chains and rules. cmdAdd reads top to bottom: parse, find the container's addresses in
// prevResult, compute the desired nat state, observe, plan, apply, flush stale UDP conntrack entries, pass
// prevResult through. DEL is the same plan with nothing desired over the attachment's scope.

import { existsSync } from 'node:fs';
import * as E from 'fp-ts/lib/Either.js';
import * as TE from 'fp-ts/lib/TaskEither.js';
import { pipe } from 'fp-ts/lib/function.js';
import { inNetns, run } from '../../../adapters/kernel/exec.ts';
import type { CmdArgs, NetConf } from '../../../core/cni/env.ts';
import { cniError, ErrCode, type CniError } from '../../../core/cni/errors.ts';
import { PLUGIN_VERSIONS, type Result } from '../../../core/cni/result.ts';
import { formatIP } from '../../../core/ip/ip.ts';
import { emptyKernelState, HOST, type IptFamily, type KernelState, type Op, type OwnershipScope } from '../../../core/kernel/model.ts';
import { devSysctl } from '../../../core/kernel/keys.ts';
import { isLinkName } from '../../../core/kernel/names.ts';
import { drift, plan } from '../../../core/kernel/plan.ts';
import {
  containerAddresses,
  parsePortMapConf,
  requirePrevResult,
  type ContainerAddresses,
  type PortMapConf,
} from '../../../core/portmap/config.ts';
import { portmapDesired, portmapScope, udpHostPorts } from '../../../core/portmap/desired.ts';
import { kernelFor } from '../kernel.ts';
import { applyIn, kernelError } from '../kit.ts';
import { resolveBackend } from '../netfilter.ts';
import { ownBackendOnly } from '../../../core/netfilter/masquerade.ts';
import type { NetfilterBackend } from '../../../core/netfilter/backend.ts';
import type { Ctx, Plugin } from '../plugin.ts';

/** iptables families this kernel has: without IPv6 there is no ip6tables to read (the reference skips it too). */
const families = (): IptFamily[] => (existsSync('/proc/sys/net/ipv6') ? [4, 6] : [4]);

const parse = (conf: NetConf): E.Either<CniError, PortMapConf> => parsePortMapConf(conf);
/** ADD and CHECK: the backend decided (the config's, else the host's default; nftables needs nft). */
const parseWithBackend = (conf: NetConf): E.Either<CniError, PortMapConf> =>
  E.chain((pc: PortMapConf) => E.map((backend: NetfilterBackend) => ({ ...pc, backend }))(resolveBackend('backend', pc.backend)))(
    parse(conf),
  );

/**
 * The nat table (or nftables) of the host as far as `scope` and `desired` name it, and `sysctls`. Never the
 * links, addresses and routes: portmap plans none (`ip: false`).
 */
function observe(
  ctx: Ctx,
  scope: OwnershipScope,
  desired?: KernelState,
  sysctls: readonly string[] = [],
): TE.TaskEither<CniError, KernelState> {
  return pipe(
    kernelFor(ctx).observe({
      namespaces: [HOST],
      ip: false,
      scope,
      ...(desired ? { desired } : {}),
      iptables: families(),
      ...(sysctls.length ? { sysctls: sysctls.map((key) => ({ ns: HOST, key })) } : {}),
    }),
    TE.mapLeft(kernelError),
  );
}

function apply(ctx: Ctx, ops: readonly Op[]): TE.TaskEither<CniError, void> {
  return applyIn(kernelFor(ctx), ops);
}

/** route_localnet of a host interface (the sysctl portmapDesired turns on where the container is routed). */
const localnetKey = (dev: string): string => devSysctl('net.ipv4.conf', dev, 'route_localnet');

/** Host sysctls alone (no table, no link). */
const observeSysctls = (ctx: Ctx, keys: readonly string[]): TE.TaskEither<CniError, KernelState> =>
  pipe(kernelFor(ctx).observe({ namespaces: [HOST], ip: false, sysctls: keys.map((key) => ({ ns: HOST, key })) }), TE.mapLeft(kernelError));

/** The part of a scope in the families the container has an address in. */
function ofFamilies(scope: OwnershipScope, addrs: ContainerAddresses): OwnershipScope {
  const has = (f: IptFamily): boolean => (f === 4 ? !!addrs.v4 : !!addrs.v6);
  return {
    ...scope,
    chains: scope.chains.filter((c) => has(c.family)),
    ruleMarkers: scope.ruleMarkers.filter((m) => has(m.family)),
    ...(scope.nftRuleMarkers ? { nftRuleMarkers: scope.nftRuleMarkers.filter((m) => has(m.family === 'ip6' ? 6 : 4)) } : {}),
  };
}

/** Bring the nat table to "this attachment has no port mappings". */
const removeAttachment = (ctx: Ctx, scope: OwnershipScope): TE.TaskEither<CniError, void> =>
  pipe(
    observe(ctx, scope),
    TE.chain((seen) => apply(ctx, plan(emptyKernelState(), seen, scope))),
  );

/**
 * The host interface that routes to the container's IPv4 address (`ip route get`, as the reference's
 * netlink RouteGet), or undefined when there is none or its name is not one felt can write a sysctl for.
 */
const routableHostIf =
  (ctx: Ctx, addrs: ContainerAddresses, pc: PortMapConf): T<string | undefined> =>
  async () => {
    if (!addrs.v4 || !pc.snat) return undefined;
    // In the call's host namespace (the caller's, when feltd serves the call).
    const r = await run([...inNetns(HOST, ctx.hostNetns), 'ip', '-json', 'route', 'get', formatIP(addrs.v4.ip)], '');
    if (r.code !== 0) return undefined;
    try {
      const dev = (JSON.parse(r.stdout) as { dev?: unknown }[])[0]?.dev;
      return typeof dev === 'string' && isLinkName(dev) ? dev : undefined;
    } catch {
      return undefined;
    }
  };
type T<A> = () => Promise<A>;

/**
 * Delete the UDP conntrack entries of the host ports, so that a stale entry (e.g. from before the container
 * existed) does not keep blackholing the new traffic. Failures are reported on stderr and do not fail ADD, as
 * the reference's; a missing `conntrack` tool is named.
 */
async function flushUdpConntrack(ctx: Ctx, pc: PortMapConf, addrs: ContainerAddresses): Promise<void> {
  const ports = udpHostPorts(pc);
  const fams = [addrs.v4 ? 'ipv4' : undefined, addrs.v6 ? 'ipv6' : undefined].filter((f): f is string => !!f);
  for (const family of fams) {
    for (const port of ports) {
      const r = await run([...inNetns(HOST, ctx.hostNetns), 'conntrack', '-D', '-f', family, '-p', 'udp', '--dport', String(port)], '');
      // conntrack exits 1 when it deleted nothing ("0 flow entries have been deleted").
      if (r.code === 0 || /0 flow entries have been deleted/.test(r.stderr)) continue;
      if (r.code === 127) {
        process.stderr.write(
          `portmap: conntrack not found (install the "conntrack" package): stale UDP conntrack entries for host ports ${ports.join(',')} were not deleted\n`,
        );
        return;
      }
      process.stderr.write(`portmap: failed to delete stale UDP conntrack entries for ${family} port ${port}: ${r.stderr.trim()}\n`);
    }
  }
}

function cmdAdd(args: CmdArgs, conf: NetConf, ctx: Ctx): TE.TaskEither<CniError, Result> {
  const parsed = pipe(
    parseWithBackend(conf),
    E.chain((pc) => E.map((prev: Result) => ({ pc, prev }))(requirePrevResult(pc))),
  );
  if (E.isLeft(parsed)) return TE.left(parsed.left);
  const { pc, prev } = parsed.right;
  const addrs = containerAddresses(prev, args.ifname);
  // Nothing to forward: prevResult passes through and nothing is touched, as the reference does.
  if (pc.portMappings.length === 0 || (!addrs.v4 && !addrs.v6)) return TE.right(prev);
  const scope = portmapScope(HOST, pc.name, args.containerId);
  // What this ADD writes: the backend's tables of the families the container has an address in (as the
  // reference's ADD). What the other backend or family may hold of this attachment is DEL's to remove.
  const mine = ofFamilies(ownBackendOnly(scope, pc.backend), addrs);
  const desiredWith = (hostIf: string | undefined): KernelState =>
    portmapDesired({ conf: pc, containerId: args.containerId, addresses: addrs, ns: HOST, ...(hostIf ? { hostIf } : {}) });
  // The route lookup and the table read at once: the host interface changes only which route_localnet is
  // desired, so the read takes that sysctl of every host interface prevResult names (the bridge, the veth:
  // the one routing to the container is among them; if not, it is read once the lookup answered).
  const candidates = [...new Set((prev.interfaces ?? []).filter((i) => !i.sandbox && isLinkName(i.name)).map((i) => localnetKey(i.name)))];
  return pipe(
    TE.Do,
    TE.apS('hostIf', TE.fromTask(routableHostIf(ctx, addrs, pc))),
    TE.apS('seen', observe(ctx, mine, desiredWith(undefined), addrs.v4 && pc.snat ? candidates : [])),
    TE.chain(({ hostIf, seen }) => {
      const desired = desiredWith(hostIf);
      const missing = desired.sysctls.filter((d) => !candidates.includes(d.key)).map((d) => d.key);
      const complete: TE.TaskEither<CniError, KernelState> = missing.length
        ? TE.map((more: KernelState) => ({ ...seen, sysctls: [...seen.sysctls, ...more.sysctls] }))(observeSysctls(ctx, missing))
        : TE.right(seen);
      return pipe(
        complete,
        TE.chain((all) => apply(ctx, plan(desired, all, mine))),
      );
    }),
    // Whatever failed, converge back to "no port mappings for this attachment".
    TE.orElse((err) => async () => {
      await removeAttachment(ctx, scope)();
      return E.left<CniError, void>(err);
    }),
    TE.chainFirst(() => TE.fromTask(() => flushUdpConntrack(ctx, pc, addrs))),
    TE.map(() => prev),
  );
}

function cmdDel(args: CmdArgs, conf: NetConf, ctx: Ctx): TE.TaskEither<CniError, void> {
  // DEL needs neither prevResult nor the namespace: the attachment's chains are named by network and container.
  const { prevResult: _prev, ...raw } = conf.raw;
  const parsed = parse({ ...conf, raw });
  if (E.isLeft(parsed)) return TE.left(parsed.left);
  return removeAttachment(ctx, portmapScope(HOST, parsed.right.name, args.containerId));
}

function cmdCheck(args: CmdArgs, conf: NetConf, ctx: Ctx): TE.TaskEither<CniError, void> {
  const parsed = pipe(
    parseWithBackend(conf),
    E.chain((pc) => E.map((prev: Result) => ({ pc, prev }))(requirePrevResult(pc))),
  );
  if (E.isLeft(parsed)) return TE.left(parsed.left);
  const { pc, prev } = parsed.right;
  if (pc.portMappings.length === 0) return TE.right(undefined);
  const addrs = containerAddresses(prev, args.ifname);
  // Only the families the container has an address in (the reference 1.1.1 also looks in ip6tables for an
  // IPv4-only container and fails). route_localnet is a setting, not an object: not compared.
  const want = { ...portmapDesired({ conf: pc, containerId: args.containerId, addresses: addrs, ns: HOST }), sysctls: [] };
  const scope = portmapScope(HOST, pc.name, args.containerId);
  return pipe(
    observe(ctx, scope, want),
    TE.chainEitherK((seen) => {
      const wrong = drift(want, seen, scope);
      return wrong.length === 0
        ? E.right(undefined)
        : E.left(cniError(ErrCode.Drift, `port mappings of ${args.containerId} drifted: ${wrong.join('; ')}`));
    }),
  );
}

export const portmap: Plugin = {
  type: 'portmap',
  versions: PLUGIN_VERSIONS,
  about: 'felt portmap: forwards host ports to a container with iptables or nftables (chained plugin)',
  add: cmdAdd,
  del: cmdDel,
  check: cmdCheck,
  // Nothing of portmap's outlives its attachments' DELs but what GC of the runtime's attachments would also
  // miss; STATUS: portmap is ready whenever it can run.
  gc: () => TE.right(undefined),
  status: () => TE.right(undefined),
};
