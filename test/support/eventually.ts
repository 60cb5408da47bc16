// A bounded poll for state that settles asynchronously (the kernel removes a deleted namespace's veths, and
// their peers, after `ip netns del` returns; daemons resync on a timer). Tests wait on the condition itself,
// never for a fixed time:
//
//   await eventually(() => expectClean(host, dataDir), { what: 'the deleted pod namespace takes its host veth' });
//   await eventually(async () => (await veths(host)).length === 0, { what: 'no veth left', timeoutMs: 5000 });
//
// `check` passes when it returns anything but `false` without throwing (so `expect` works inside it); its
// value is returned. After `timeoutMs` the error names what was awaited, with the last failure.

export interface EventuallyOptions {
  /** What is awaited, for the error: "route to 10.244.1.0/24 restored". */
  readonly what: string;
  /** Give up after this long (default 10 s: generous, as a loaded machine is slow, and only failures wait it out). */
  readonly timeoutMs?: number;
  /** Pause between tries (default 50 ms). */
  readonly intervalMs?: number;
}

const pause = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function eventually<T>(check: () => T | Promise<T>, opts: EventuallyOptions): Promise<Exclude<T, false>> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const deadline = Date.now() + timeoutMs;
  let tries = 0;
  for (;;) {
    tries++;
    let last: string;
    try {
      const v = await check();
      if (v !== false) return v as Exclude<T, false>;
      last = 'the check returned false';
    } catch (e) {
      last = (e as Error)?.message ?? String(e);
    }
    if (Date.now() >= deadline) throw new Error(`still waiting after ${timeoutMs} ms (${tries} tries): ${opts.what}\nlast: ${last}`);
    await pause(opts.intervalMs ?? 50);
  }
}
