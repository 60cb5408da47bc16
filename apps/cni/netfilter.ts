// Which netfilter backend a plugin uses on this host. As the reference (pkg/ip/ipmasq_linux.go): the config's
// choice, else iptables unless iptables is unusable here and nftables works. felt's test of "usable" is the
// tools' presence on PATH (iptables-restore and iptables-save; nft), which costs no process on the ADD path.
// Asking for nftables where `nft` is missing is an error naming what is missing, before anything changes.

import * as E from 'fp-ts/lib/Either.js';
import * as TE from 'fp-ts/lib/TaskEither.js';
import { pipe } from 'fp-ts/lib/function.js';
import { cniError, ErrCode, type CniError } from '../../core/cni/errors.ts';
import type { Attachment } from '../../core/ipam/config.ts';
import { emptyKernelState, HOST } from '../../core/kernel/model.ts';
import { plan } from '../../core/kernel/plan.ts';
import { masqNetworkScope, staleMasquerade } from '../../core/netfilter/masquerade.ts';
import { onPath } from '../../adapters/kernel/exec.ts';
import { kernelFor } from './kernel.ts';
import { applyIn, kernelError } from './kit.ts';
import type { Ctx } from './plugin.ts';
import type { NetfilterBackend } from '../../core/netfilter/backend.ts';

const hasNft = (): boolean => onPath('nft');
const hasIptables = (): boolean => onPath('iptables-restore') && onPath('iptables-save');

export function resolveBackend(field: string, requested: NetfilterBackend | undefined): E.Either<CniError, NetfilterBackend> {
  if (requested === 'nftables' && !hasNft()) {
    return E.left(
      cniError(
        ErrCode.InvalidNetworkConfig,
        `${field}: "nftables" needs the nft command (Debian: the nftables package), which is not on PATH`,
      ),
    );
  }
  if (requested !== undefined) return E.right(requested);
  return E.right(!hasIptables() && hasNft() ? 'nftables' : 'iptables');
}

/** A bridge or ptp config with its masquerade backend decided (only when it masquerades). */
export function withMasqBackend<T extends { readonly ipMasq: boolean; readonly ipMasqBackend?: NetfilterBackend }>(
  c: T,
): E.Either<CniError, T> {
  if (!c.ipMasq) return E.right(c);
  return E.map((ipMasqBackend: NetfilterBackend) => ({ ...c, ipMasqBackend }))(resolveBackend('ipMasqBackend', c.ipMasqBackend));
}

/**
 * bridge's and ptp's GC step for nftables masquerade: every rule of the network in `inet
 * cni_plugins_masquerade` whose attachment is not valid goes, whether felt or the reference made it and
 * whether or not felt has a record of it (core/netfilter/masquerade.ts staleMasquerade). One `nft -j list
 * table` when nft is installed; nothing otherwise.
 */
export function gcMasquerade(ctx: Ctx, network: string, valid: readonly Attachment[]): TE.TaskEither<CniError, void> {
  const k = kernelFor(ctx);
  return pipe(
    k.observe({
      namespaces: [HOST],
      scope: { links: [], devices: [], chains: [], ruleMarkers: [], ...masqNetworkScope(HOST, network) },
      iptables: [],
      ip: false,
    }),
    TE.mapLeft(kernelError),
    TE.chain((seen) => {
      const stale = staleMasquerade(HOST, network, valid, seen.nftRules ?? []);
      if (stale.nftRuleMarkers.length === 0) return TE.right(undefined);
      return applyIn(k, plan(emptyKernelState(), seen, { links: [], devices: [], chains: [], ruleMarkers: [], ...stale }));
    }),
  );
}
