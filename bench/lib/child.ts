/** Child side of isolate.ts: run one exported task, send its result, exit (worker pools included). */

interface Request {
  moduleUrl: string;
  exportName: string;
  arg: unknown;
}

process.once('message', (req: Request) => {
  void (async () => {
    try {
      const mod = (await import(req.moduleUrl)) as Record<string, unknown>;
      const fn = mod[req.exportName];
      if (typeof fn !== 'function') throw new Error(`${req.moduleUrl} has no exported function "${req.exportName}"`);
      const emit = (x: unknown) => void process.send!({ partial: x });
      const value = await (fn as (a: unknown, e: typeof emit) => unknown)(req.arg, emit);
      process.send!({ ok: true, value }, () => process.exit(0));
    } catch (e) {
      const error = e instanceof Error ? (e.stack ?? e.message) : String(e);
      process.send!({ ok: false, error }, () => process.exit(0));
    }
  })();
});
