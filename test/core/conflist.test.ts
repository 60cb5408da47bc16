// Network configuration lists as libcni reads them, and the stdin each plugin of a chain gets.

import * as E from 'fp-ts/lib/Either.js';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { cniArgPairs, cnitoolContainerId, jsonErrorOffset, parseConfList, pluginConfig, readCacheEntry } from '../../core/cni/conflist.ts';
import { runs } from '../support/runs.ts';

const list = (o: Record<string, unknown>) => JSON.stringify({ name: 'n', plugins: [{ type: 'bridge' }], ...o });

describe('parseConfList', () => {
  it('cniVersions: the highest supported one, cniVersion among the candidates', () => {
    const v = (o: Record<string, unknown>) => {
      const r = parseConfList(list(o), true);
      return E.isRight(r) ? r.right.cniVersion : r.left;
    };
    expect(v({ cniVersion: '0.4.0', cniVersions: ['1.0.0', '9.0.0'] })).toBe('1.0.0');
    expect(v({ cniVersion: '1.1.0', cniVersions: ['0.3.1'] })).toBe('1.1.0');
    expect(v({ cniVersions: ['9.0.0'] })).toContain('cniVersions: none of ["9.0.0"] is supported');
    expect(v({ cniVersions: '1.0.0' })).toContain('cniVersions: must be a list');
    expect(v({})).toBe('0.1.0');
  });

  it('disableCheck, disableGC, loadOnlyInlinedPlugins as booleans or "true"/"false"', () => {
    const r = parseConfList(list({ cniVersion: '1.0.0', disableCheck: 'TRUE', disableGC: true }), true);
    expect(E.isRight(r) && [r.right.disableCheck, r.right.disableGC, r.right.loadOnlyInlinedPlugins]).toEqual([true, true, false]);
    expect(parseConfList(list({ disableCheck: 'yes' }), true)).toEqual(E.left('disableCheck: must be true or false, got "yes"'));
  });

  it('plugins from <dir>/<name>/*.conf follow the inline ones, unless loadOnlyInlinedPlugins', () => {
    const extra = [JSON.stringify({ type: 'portmap' })];
    const a = parseConfList(list({ cniVersion: '1.0.0' }), true, extra);
    expect(E.isRight(a) && a.right.plugins.map((p) => p['type'])).toEqual(['bridge', 'portmap']);
    const b = parseConfList(list({ cniVersion: '1.0.0', loadOnlyInlinedPlugins: true }), true, extra);
    expect(E.isRight(b) && b.right.plugins.map((p) => p['type'])).toEqual(['bridge']);
    const c = parseConfList(JSON.stringify({ name: 'n', cniVersion: '1.0.0' }), true, extra);
    expect(E.isRight(c) && c.right.plugins.map((p) => p['type'])).toEqual(['portmap']);
    expect(parseConfList(JSON.stringify({ name: 'n', loadOnlyInlinedPlugins: true }), true)).toMatchObject({ _tag: 'Left' });
    expect(parseConfList(JSON.stringify({ name: 'n', plugins: [{}] }), true)).toEqual(E.left("plugins[0].type: missing 'type'"));
  });

  it('a single .conf is wrapped into a list of one', () => {
    const r = parseConfList(JSON.stringify({ cniVersion: '1.0.0', name: 's', type: 'bridge', bridge: 'b0' }), false);
    expect(E.isRight(r) && r.right).toMatchObject({ name: 's', cniVersion: '1.0.0', plugins: [{ type: 'bridge', bridge: 'b0' }] });
  });

  it('a broken file: the message names line and column', () => {
    expect(parseConfList('{\n  "name": "x",\n  "plugins": [}\n', true)).toEqual(E.left(expect.stringMatching(/\(line 3, column 15\)$/)));
  });
});

describe('jsonErrorOffset', () => {
  it('is undefined exactly when JSON.parse accepts the text', () => {
    const ok = (t: string): boolean => {
      try {
        JSON.parse(t);
        return true;
      } catch {
        return false;
      }
    };
    fc.assert(
      fc.property(
        fc.oneof(
          fc.json(),
          fc.string({ maxLength: 30 }),
          fc.json().map((j) => j.slice(0, Math.max(0, j.length - 2))),
        ),
        (t) => {
          expect(jsonErrorOffset(t) === undefined).toBe(ok(t));
        },
      ),
      { numRuns: runs(500) },
    );
  });
});

describe('what each plugin of a chain gets', () => {
  const l = {
    name: 'net',
    cniVersion: '1.0.0',
    disableCheck: false,
    disableGC: false,
    loadOnlyInlinedPlugins: false,
    plugins: [],
    raw: {},
  };
  it('the list name and version, prevResult, and only the capabilities it declares', () => {
    const caps = { portMappings: [{ hostPort: 80, containerPort: 8080 }], bandwidth: { ingressRate: 1 } };
    expect(pluginConfig(l, { type: 'portmap', capabilities: { portMappings: true, bandwidth: false } }, { ips: [] }, caps)).toEqual({
      type: 'portmap',
      capabilities: { portMappings: true, bandwidth: false },
      name: 'net',
      cniVersion: '1.0.0',
      prevResult: { ips: [] },
      runtimeConfig: { portMappings: caps.portMappings },
    });
    expect(pluginConfig(l, { type: 'bridge', name: 'other' }, undefined, caps)).toEqual({
      type: 'bridge',
      name: 'net',
      cniVersion: '1.0.0',
    });
  });

  it("cnitool's container ID, libcni's CNI_ARGS pairs and cache entries", () => {
    expect(cnitoolContainerId('/var/run/netns/x')).toMatch(/^cnitool-[0-9a-f]{20}$/);
    expect(cniArgPairs('A=1;B=2')).toEqual(
      E.right([
        ['A', '1'],
        ['B', '2'],
      ]),
    );
    expect(cniArgPairs('A=1;B')).toEqual(E.left('invalid CNI_ARGS pair "B" (want KEY=VALUE)'));
    expect(readCacheEntry('{"kind":"other"}')).toMatchObject({ _tag: 'Left' });
  });
});

describe('a plugin type is a file name in CNI_PATH, never a path', () => {
  it.each(['../../bin/sh', '/bin/sh', 'a/b', '..', '.', 'a\\b', 'x\ny'])(
    '%j is refused in a list, a single config and a plugin file, naming the field',
    (type) => {
      const list = parseConfList(JSON.stringify({ cniVersion: '1.0.0', name: 'n', plugins: [{ type: 'bridge' }, { type }] }), true);
      expect(list).toEqual(E.left(expect.stringContaining(`plugins[1].type: ${JSON.stringify(type)}`)));
      expect(parseConfList(JSON.stringify({ cniVersion: '1.0.0', name: 'n', type }), false)).toEqual(
        E.left(expect.stringContaining(`type: ${JSON.stringify(type)}`)),
      );
      expect(
        parseConfList(JSON.stringify({ cniVersion: '1.0.0', name: 'n', plugins: [{ type: 'bridge' }] }), true, [JSON.stringify({ type })]),
      ).toEqual(E.left(expect.stringContaining(`plugin file 1 of n/: type: ${JSON.stringify(type)}`)));
    },
  );
});
