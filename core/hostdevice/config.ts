// host-device's network config: which host device to hand to the pod, and the optional IPAM. One selector
// wins, in the reference's order: `device` (a name), `hwaddr` (a MAC), `kernelpath` (a /sys/devices/ path
// whose net/ directory names the device), `pciBusID` (a PCI address, whose /sys/bus/pci/devices/<id>/net
// names it); runtimeConfig `deviceID` replaces `pciBusID`. Resolving a path or a PCI address reads sysfs,
// which the app does; here every value is checked, with a message naming the field.

import * as E from 'fp-ts/lib/Either.js';
import type { NetConf } from '../cni/env.ts';
import { invalidConfig, type CniError } from '../cni/errors.ts';
import type { DNS } from '../cni/result.ts';
import { parseMac } from '../ip/mac.ts';
import { dataDirProblem, DEFAULT_DATA_DIR } from '../ipam/config.ts';
import { linkNameProblem } from '../kernel/names.ts';

/** How the config names the device; `field` is what messages name. */
export type Selector =
  | { readonly by: 'device'; readonly field: 'device'; readonly name: string }
  | { readonly by: 'hwaddr'; readonly field: 'hwaddr'; readonly mac: string }
  | { readonly by: 'kernelpath'; readonly field: 'kernelpath'; readonly path: string }
  | { readonly by: 'pci'; readonly field: 'pciBusID' | 'runtimeConfig.deviceID'; readonly id: string };

export interface HostDeviceConf {
  readonly name: string;
  readonly cniVersion: string;
  readonly selector: Selector;
  readonly dns?: DNS;
  /** '' means no IPAM: the device is moved and brought up, without addresses. */
  readonly ipamType: string;
  /** Where felt's event log is (the device's original name, MTU, up state and alias are kept there). */
  readonly dataDir: string;
}

type Raw = Readonly<Record<string, unknown>>;
const obj = (v: unknown): Raw | undefined => (typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Raw) : undefined);
const given = (v: unknown): boolean => v !== undefined && v !== null && v !== '';

/** A kernel device path: absolute, under /sys/devices/, one directory name per component, no '.' or '..'. */
function kernelPathProblem(p: string): string | undefined {
  if (!p.startsWith('/sys/devices/')) return 'must be absolute and begin with /sys/devices/';
  if (/[\x00-\x1f\x7f]/.test(p)) return 'contains control characters';
  if (p.split('/').some((seg) => seg === '.' || seg === '..')) return "has a '.' or '..' component";
  return undefined;
}

/** A PCI address or auxiliary device name: one directory name under /sys/bus/.../devices. */
function deviceIdProblem(id: string): string | undefined {
  if (id === '.' || id === '..' || id.includes('/')) return "must be one name (no '/', not . or ..)";
  if (/[\s\x00-\x1f\x7f]/.test(id)) return 'contains whitespace or control characters';
  return undefined;
}

export function parseHostDeviceConf(conf: NetConf): E.Either<CniError, HostDeviceConf> {
  const o = conf.raw;
  const errs: string[] = [];
  const str = (field: string, v: unknown): string | undefined => {
    if (!given(v)) return undefined;
    if (typeof v === 'string') return v;
    errs.push(`${field}: must be a string, got ${JSON.stringify(v)}`);
    return undefined;
  };
  const device = str('device', o['device']);
  const hwaddr = str('hwaddr', o['hwaddr']);
  const kernelpath = str('kernelpath', o['kernelpath']);
  const rc = o['runtimeConfig'] === undefined || o['runtimeConfig'] === null ? {} : obj(o['runtimeConfig']);
  if (!rc) errs.push('runtimeConfig: must be an object');
  const deviceID = str('runtimeConfig.deviceID', rc?.['deviceID']);
  const pciBusID = str('pciBusID', o['pciBusID']);

  let selector: Selector | undefined;
  if (device !== undefined) {
    const p = linkNameProblem(device);
    if (p) errs.push(`device: ${JSON.stringify(device)} ${p}`);
    else selector = { by: 'device', field: 'device', name: device };
  } else if (hwaddr !== undefined) {
    const mac = parseMac(hwaddr);
    if (!mac) errs.push(`hwaddr: failed to parse MAC address ${JSON.stringify(hwaddr)}`);
    else selector = { by: 'hwaddr', field: 'hwaddr', mac };
  } else if (kernelpath !== undefined) {
    const p = kernelPathProblem(kernelpath);
    if (p) errs.push(`kernelpath: kernel device path ${JSON.stringify(kernelpath)} ${p}`);
    else selector = { by: 'kernelpath', field: 'kernelpath', path: kernelpath.replace(/\/+$/, '') };
  } else if (deviceID !== undefined || pciBusID !== undefined) {
    const [field, id] = deviceID !== undefined ? (['runtimeConfig.deviceID', deviceID] as const) : (['pciBusID', pciBusID!] as const);
    const p = deviceIdProblem(id);
    if (p) errs.push(`${field}: ${JSON.stringify(id)} ${p}`);
    else selector = { by: 'pci', field, id };
  } else if (errs.length === 0) {
    errs.push('device: specify either "device", "hwaddr", "kernelpath" or "pciBusID"');
  }

  let ipamType = '';
  if (o['ipam'] !== undefined && o['ipam'] !== null) {
    const ipam = obj(o['ipam']);
    if (!ipam) errs.push('ipam: must be an object');
    else if (ipam['type'] !== undefined && typeof ipam['type'] !== 'string') errs.push('ipam.type: must be a string');
    else ipamType = (ipam['type'] as string | undefined) ?? '';
  }
  let dns: DNS | undefined;
  if (o['dns'] !== undefined && o['dns'] !== null) {
    const d = obj(o['dns']);
    if (!d) errs.push('dns: must be an object');
    else if (Object.keys(d).length) dns = d as DNS;
  }
  const dataDir = given(o['dataDir']) ? o['dataDir'] : DEFAULT_DATA_DIR;
  if (typeof dataDir !== 'string') errs.push(`dataDir: must be a path, got ${JSON.stringify(dataDir)}`);
  else {
    const p = dataDirProblem(dataDir);
    if (p) errs.push(`dataDir: ${JSON.stringify(dataDir)} ${p}`);
  }
  if (errs.length || !selector) return E.left(invalidConfig(errs.join('; ')));
  return E.right({
    name: conf.name,
    cniVersion: conf.cniVersion,
    selector,
    ...(dns ? { dns } : {}),
    ipamType,
    dataDir: dataDir as string,
  });
}

/** The selector in words, for messages: `device "ens5"`, `hwaddr 02:...`, `pciBusID 0000:00:05.0`. */
export function describeSelector(s: Selector): string {
  switch (s.by) {
    case 'device':
      return `device ${JSON.stringify(s.name)}`;
    case 'hwaddr':
      return `hwaddr ${s.mac}`;
    case 'kernelpath':
      return `kernelpath ${JSON.stringify(s.path)}`;
    case 'pci':
      return `${s.field} ${JSON.stringify(s.id)}`;
  }
}
