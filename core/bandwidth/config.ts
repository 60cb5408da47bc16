// The bandwidth plugin's config, as plugins/meta/bandwidth reads it: `ingressRate`/`ingressBurst` and
// `egressRate`/`egressBurst` at the top level (rates in bits per second, bursts in bits), or, when none of
// those four keys is there, `runtimeConfig.bandwidth` with the same keys. Validation as the reference (a rate
// without a burst, a burst without a rate, a burst of 4 GB or more), plus what the reference lets through and
// tc cannot do: values that are not non-negative integers, a rate under 8 bit/s or a burst under 8 bits
// (tc counts bytes: they would be 0).

import * as E from 'fp-ts/lib/Either.js';
import { invalidConfig, type CniError } from '../cni/errors.ts';

export interface Limit {
  /** Bits per second, as configured. */
  readonly rate: number;
  /** Bits, as configured. */
  readonly burst: number;
}

export interface BandwidthConf {
  /** Traffic to the container (a tbf on the host veth); undefined: no limit. */
  readonly ingress?: Limit;
  /** Traffic from the container (through the ifb); undefined: no limit. */
  readonly egress?: Limit;
}

const KEYS = ['ingressRate', 'ingressBurst', 'egressRate', 'egressBurst'] as const;
type Key = (typeof KEYS)[number];

/** The reference refuses burst/8 >= MaxUint32 ("burst cannot be more than 4GB"). */
const MAX_BURST_BYTES = 0xffffffff;

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function num(src: Record<string, unknown>, prefix: string, k: Key): E.Either<CniError, number> {
  const v = src[k];
  if (v === undefined || v === null) return E.right(0);
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) {
    return E.left(
      invalidConfig(
        `${prefix}${k}: must be a non-negative integer (${k.endsWith('Rate') ? 'bits per second' : 'bits'}), got ${JSON.stringify(v)}`,
      ),
    );
  }
  if (!Number.isSafeInteger(v)) return E.left(invalidConfig(`${prefix}${k}: ${v} is too large`));
  return E.right(v);
}

function limit(src: Record<string, unknown>, prefix: string, dir: 'ingress' | 'egress'): E.Either<CniError, Limit | undefined> {
  const rk: Key = `${dir}Rate`;
  const bk: Key = `${dir}Burst`;
  const rate = num(src, prefix, rk);
  if (E.isLeft(rate)) return rate;
  const burst = num(src, prefix, bk);
  if (E.isLeft(burst)) return burst;
  const r = rate.right;
  const b = burst.right;
  if (b === 0 && r !== 0) return E.left(invalidConfig(`${prefix}${bk}: if ${rk} is set, ${bk} must also be set`));
  if (r === 0 && b !== 0) return E.left(invalidConfig(`${prefix}${rk}: if ${bk} is set, ${rk} must also be set`));
  if (Math.floor(b / 8) >= MAX_BURST_BYTES) return E.left(invalidConfig(`${prefix}${bk}: burst cannot be more than 4GB`));
  if (r === 0) return E.right(undefined);
  if (r < 8) return E.left(invalidConfig(`${prefix}${rk}: ${r} bit/s is less than one byte per second (tc counts bytes)`));
  if (b < 8) return E.left(invalidConfig(`${prefix}${bk}: ${b} bits is less than one byte (tc counts bytes)`));
  return E.right({ rate: r, burst: b });
}

/**
 * The limits of one network config (its raw JSON object). The top-level keys win over
 * `runtimeConfig.bandwidth` as soon as one of them is present, as in the reference (a Go embedded pointer).
 */
export function parseBandwidthConf(raw: Readonly<Record<string, unknown>>): E.Either<CniError, BandwidthConf> {
  const topLevel = KEYS.some((k) => raw[k] !== undefined);
  const rc = raw['runtimeConfig'];
  if (rc !== undefined && rc !== null && !isObject(rc)) return E.left(invalidConfig('runtimeConfig: must be an object'));
  const rt = isObject(rc) ? rc['bandwidth'] : undefined;
  if (!topLevel && rt !== undefined && rt !== null && !isObject(rt))
    return E.left(invalidConfig('runtimeConfig.bandwidth: must be an object'));
  const [src, prefix] = topLevel || !isObject(rt) ? [raw, ''] : [rt, 'runtimeConfig.bandwidth.'];
  const ingress = limit(src, prefix, 'ingress');
  if (E.isLeft(ingress)) return ingress;
  const egress = limit(src, prefix, 'egress');
  if (E.isLeft(egress)) return egress;
  return E.right({ ...(ingress.right ? { ingress: ingress.right } : {}), ...(egress.right ? { egress: egress.right } : {}) });
}

export const isUnlimited = (c: BandwidthConf): boolean => c.ingress === undefined && c.egress === undefined;
