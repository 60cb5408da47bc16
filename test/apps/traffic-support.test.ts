// The echo server of test/support/traffic.ts (used by every port-forwarding test) outlives any client: a
// client that resets its connection (as one does whose attempt timed out under load, when the answer then
// arrives) costs that connection only. It once killed the server, so that every later attempt was refused
// and the asking test failed with "no answer within 20 s" (the chains flake).

import { afterAll, describe, expect, it } from 'vitest';
import { exec, nsRun, Sandbox } from '../support/ns.ts';
import { ask, startServer, writeScripts } from '../support/traffic.ts';

const sb = new Sandbox();
afterAll(() => sb.cleanup());

describe('the echo server', () => {
  it('answers after clients that reset their connections (before and after its answer)', async () => {
    const ns = await sb.ns();
    await nsRun(ns, ['ip', 'link', 'set', 'lo', 'up']);
    const scripts = writeScripts(sb.dir());
    const svc = await startServer(ns, scripts.server, 8080, 8081);
    try {
      // A reset as soon as the connection is up (the server's answer meets it), and one after the answer is
      // in but unread (the close sends a RST).
      const reset = `const net = require('node:net');
        const s = net.connect(8080, '127.0.0.1', () => (process.argv[1] === 'now' ? s.resetAndDestroy() : setTimeout(() => s.resetAndDestroy(), 200)));
        s.on('error', () => undefined);`;
      for (const when of ['now', 'later', 'now', 'later']) {
        const r = await exec(['ip', 'netns', 'exec', ns, process.execPath, '-e', reset, when]);
        expect(r.code, r.stderr).toBe(0);
      }
      const got = await ask(ns, scripts.client, 'tcp', '127.0.0.1', 8080, { withinMs: 5000 });
      expect(got, `the server: ${svc.log()}`).toBe('tcp 8080 127.0.0.1');
      expect(svc.log()).not.toContain('exited');
      expect(await ask(ns, scripts.client, 'udp', '127.0.0.1', 8081, { withinMs: 5000 })).toBe('udp 8081 127.0.0.1');
    } finally {
      svc.stop();
    }
  });
});
