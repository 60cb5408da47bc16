// host-device's pure parts: the config (one selector wins, in the reference's order; every field checked,
// with a message naming it), picking the device among the host's links, the desired states, and the Decider
// that keeps the originals between ADD and DEL.

import * as E from 'fp-ts/lib/Either.js';
import { describe, expect, it } from 'vitest';
import type { NetConf } from '../../core/cni/env.ts';
import { parseHostDeviceConf } from '../../core/hostdevice/config.ts';
import {
  attachmentKey,
  decide,
  holderOf,
  hostDeviceProjection,
  type HostDeviceEvent,
  type HostDeviceState,
} from '../../core/hostdevice/decider.ts';
import { attachedState, originalOf, pickDevice, releasedState } from '../../core/hostdevice/desired.ts';
import { HOST, type Link } from '../../core/kernel/model.ts';

const nc = (raw: Record<string, unknown>): NetConf => ({
  cniVersion: '1.0.0',
  name: 'hd',
  type: 'host-device',
  raw: { cniVersion: '1.0.0', name: 'hd', type: 'host-device', ...raw },
});
const sel = (raw: Record<string, unknown>) => E.map((c: { selector: unknown }) => c.selector)(parseHostDeviceConf(nc(raw)));
const err = (raw: Record<string, unknown>) => {
  const r = parseHostDeviceConf(nc(raw));
  return E.isLeft(r) ? r.left : undefined;
};

describe('config', () => {
  it("picks one selector in the reference's order; runtimeConfig.deviceID replaces pciBusID", () => {
    expect(sel({ device: 'ens5', hwaddr: '02:00:00:00:00:01', pciBusID: '0000:00:05.0' })).toEqual(
      E.right({ by: 'device', field: 'device', name: 'ens5' }),
    );
    expect(sel({ hwaddr: '02-00-00-00-00-0A', kernelpath: '/sys/devices/x' })).toEqual(
      E.right({ by: 'hwaddr', field: 'hwaddr', mac: '02:00:00:00:00:0a' }),
    );
    expect(sel({ kernelpath: '/sys/devices/pci0000:00/0000:00:05.0/', pciBusID: '0000:00:05.0' })).toEqual(
      E.right({ by: 'kernelpath', field: 'kernelpath', path: '/sys/devices/pci0000:00/0000:00:05.0' }),
    );
    expect(sel({ pciBusID: '0000:00:05.0', runtimeConfig: { deviceID: '0000:00:06.0' } })).toEqual(
      E.right({ by: 'pci', field: 'runtimeConfig.deviceID', id: '0000:00:06.0' }),
    );
    expect(sel({ pciBusID: '0000:00:05.0' })).toEqual(E.right({ by: 'pci', field: 'pciBusID', id: '0000:00:05.0' }));
  });

  it.each([
    [{}, 'device: specify either "device", "hwaddr", "kernelpath" or "pciBusID"'],
    [{ device: 'eth0#x' }, 'device: "eth0#x" contains'],
    [{ device: 7 }, 'device: must be a string'],
    [{ hwaddr: '02:00:00:00:00' }, 'hwaddr: failed to parse MAC address "02:00:00:00:00"'],
    [{ kernelpath: 'sys/devices/x' }, 'kernelpath: kernel device path "sys/devices/x" must be absolute and begin with /sys/devices/'],
    [{ kernelpath: '/proc/self' }, 'must be absolute and begin with /sys/devices/'],
    [{ kernelpath: '/sys/devices/../../etc' }, "kernelpath: kernel device path \"/sys/devices/../../etc\" has a '.' or '..' component"],
    [{ pciBusID: '../../../etc' }, 'pciBusID: "../../../etc" must be one name'],
    [{ runtimeConfig: { deviceID: '..' } }, 'runtimeConfig.deviceID: ".." must be one name'],
    [{ device: 'ens5', ipam: 'x' }, 'ipam: must be an object'],
    [{ device: 'ens5', dataDir: 'rel' }, 'dataDir: "rel" is not an absolute path'],
  ])('%j is code 7: %s', (raw, msg) => {
    expect(err(raw)).toMatchObject({ code: 7, msg: expect.stringContaining(msg) });
  });
});

const dev = (name: string, extra: Partial<Link> = {}): Link => ({
  ns: HOST,
  name,
  kind: 'device',
  mac: '02:00:00:00:00:01',
  mtu: 1500,
  up: true,
  ...extra,
});

describe('pickDevice', () => {
  const host = [dev('lo', { kind: 'loopback', mac: '00:00:00:00:00:00' }), dev('ens5'), dev('ens6', { mac: '02:00:00:00:00:06' })];
  it('by name, by MAC, or the first listed name that is a host link (never loopback)', () => {
    expect(E.map((l: Link) => l.name)(pickDevice({ by: 'device', field: 'device', name: 'ens6' }, host))).toEqual(E.right('ens6'));
    expect(E.map((l: Link) => l.name)(pickDevice({ by: 'hwaddr', field: 'hwaddr', mac: '02:00:00:00:00:06' }, host))).toEqual(
      E.right('ens6'),
    );
    expect(
      E.map((l: Link) => l.name)(
        pickDevice({ by: 'kernelpath', field: 'kernelpath', path: '/sys/devices/virtual' }, host, ['ens4', 'ens6', 'lo']),
      ),
    ).toEqual(E.right('ens6'));
    expect(
      E.map((l: Link) => l.name)(pickDevice({ by: 'kernelpath', field: 'kernelpath', path: '/sys/devices/virtual' }, host, ['lo'])),
    ).toMatchObject(E.left({ code: 7 }));
    expect(pickDevice({ by: 'device', field: 'device', name: 'ens9' }, host)).toEqual(
      E.left({ code: 7, msg: 'device: failed to find host device (device "ens9" is not in the host namespace)' }),
    );
  });
});

describe('desired states', () => {
  const original = originalOf(dev('ens5', { alias: 'two words' }));
  it('keeps an alias only when it is one word (DEL clears the others, as the reference does)', () => {
    expect(original).toEqual({ name: 'ens5', mac: '02:00:00:00:00:01', mtu: 1500, up: true, alias: '' });
    expect(originalOf(dev('ens5', { alias: 'uplink-3', up: false })).alias).toBe('uplink-3');
  });
  it('ADD: the device in the pod as CNI_IFNAME, moved from the host, its name as alias, with the IPAM config', () => {
    const r = attachedState({
      netns: '/run/netns/p',
      ifname: 'net1',
      original,
      ipamType: 'static',
      ipam: { ips: [{ address: 'fd00::2/64', gateway: 'fd00::1' }], routes: [{ dst: '::/0' }] },
    });
    expect(E.isRight(r) && r.right.kernel).toEqual({
      links: [{ ns: '/run/netns/p', name: 'net1', kind: 'device', up: true, alias: 'ens5', from: { ns: HOST, name: 'ens5' } }],
      addresses: [{ ns: '/run/netns/p', dev: 'net1', cidr: 'fd00::2/64' }],
      routes: [{ ns: '/run/netns/p', dst: '::/0', dev: 'net1', gw: 'fd00::1' }],
      neighbours: [],
      fdb: [],
      chains: [],
      rules: [],
      sysctls: [{ ns: '/run/netns/p', key: 'net.ipv6.conf.net1.disable_ipv6', value: '0' }],
      qdiscs: [],
    });
    expect(attachedState({ netns: '/run/netns/p', ifname: 'net1', original, ipamType: 'static', ipam: { ips: [] } })).toMatchObject(
      E.left({ code: 105 }),
    );
  });
  it('DEL: the device in the host under its name with its MTU, up state and alias; without a record only the name', () => {
    expect(releasedState('/run/netns/p', 'net1', original).links).toEqual([
      { ns: HOST, name: 'ens5', kind: 'device', alias: '', mtu: 1500, up: true, from: { ns: '/run/netns/p', name: 'net1' } },
    ]);
    expect(releasedState('/run/netns/p', 'net1', { name: 'ens5' }).links).toEqual([
      { ns: HOST, name: 'ens5', kind: 'device', alias: '', from: { ns: '/run/netns/p', name: 'net1' } },
    ]);
  });
});

describe('Decider', () => {
  const fold = (events: readonly HostDeviceEvent[], s: HostDeviceState = hostDeviceProjection.initialState()): HostDeviceState =>
    events.reduce((acc, e) => hostDeviceProjection.evolve(acc, { ...e, position: 1, stream: 'host-device/hd', time: 't' } as never), s);
  const ref = (containerId: string) => ({ network: 'hd', containerId, ifname: 'eth0' });
  const original = { name: 'ens5', mtu: 1500, up: true, alias: '' };

  it('records an attachment; another record of the same device stays (a concurrent ADD or a pod without DEL); the latest holds it', () => {
    const first = decide({ type: 'RecordAttachment', data: { ...ref('a'), netns: '/n/a', original } }, fold([]));
    expect(E.isRight(first) && first.right.map((e) => e.type)).toEqual(['HostDeviceAttached']);
    const s = fold(E.isRight(first) ? first.right : []);
    const second = decide({ type: 'RecordAttachment', data: { ...ref('b'), netns: '/n/b', original } }, s);
    expect(E.isRight(second) && second.right).toEqual([{ type: 'HostDeviceAttached', data: { ...ref('b'), netns: '/n/b', original } }]);
    const both = hostDeviceProjection.evolve(s, {
      type: 'HostDeviceAttached',
      data: { ...ref('b'), netns: '/n/b', original },
      position: 2,
      stream: 'host-device/hd',
      time: 'u',
    });
    expect(Object.keys(both.attachments).sort()).toEqual([attachmentKey('a', 'eth0'), attachmentKey('b', 'eth0')]);
    expect(holderOf(both, (o) => o.name === 'ens5')?.containerId).toBe('b');
  });

  it('forgetting what is not recorded decides nothing', () => {
    expect(decide({ type: 'ForgetAttachment', data: { ...ref('a'), reason: 'del' } }, fold([]))).toEqual(E.right([]));
  });
});
