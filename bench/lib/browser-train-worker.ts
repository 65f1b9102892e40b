/**
 * Browser side of the `browser` bench suite: a module Worker that trains the bench model on the
 * library bundle (dist/browser/moe-ts.js, served by the suite) with the wasm backend and posts
 * the training tokens/s. Typed against src/browser.ts, loaded from the bundle at run time.
 */
import type * as Lib from '../../src/browser.js';

interface Job {
  threads: number;
  config: unknown;
  warmup: number;
  steps: number;
}
interface Scope {
  onmessage: ((e: { data: Job }) => void) | null;
  postMessage(msg: unknown): void;
}
const scope = globalThis as unknown as Scope;

scope.onmessage = async (e) => {
  const job = e.data;
  try {
    const lib = (await import(new URL('../../browser/moe-ts.js', import.meta.url).href)) as typeof Lib;
    const be = await lib.initBrowserBackend('wasm', { threads: job.threads });
    const res = await fetch(new URL('../../playground/shakespeare.txt', import.meta.url));
    const text = await res.text();
    const s = new lib.TrainSession(lib.parseRunConfig(job.config), [text]);
    for (let i = 0; i < job.warmup; i++) s.trainStep();
    const t0 = performance.now();
    for (let i = 0; i < job.steps; i++) s.trainStep();
    const seconds = (performance.now() - t0) / 1000;
    const tokens = job.steps * s.config.training.batch_size * s.config.training.seq_len;
    scope.postMessage({ tokensPerSec: tokens / seconds, threads: be.threads, backend: be.name, relaxed: await lib.browserWasmUsesRelaxedSimd() });
    be.dispose();
  } catch (err) {
    scope.postMessage({ error: (err as Error).message });
  }
};
