/**
 * The `wasm` backend's Node loader: reads the kernels with fs and runs the pool on
 * worker_threads (see backend.ts for how a call runs; browser.ts is the Web Worker loader).
 */
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import type { Backend } from '../../tensor/backend.js';
import { SYNC_WORDS } from './sync.js';
import { WA, type WasmModule } from './wa.js';
import { CTRL, MAX_THREADS, WasmBackend, checkThreads, compileKernels, newKernelMemory } from './backend.js';

let compiled: { module: WasmModule; relaxed: boolean } | null = null;

/** Compiles the kernels once per process. */
function kernelModule(): { module: WasmModule; relaxed: boolean } {
  if (compiled) return compiled;
  const load = (file: string): Uint8Array => {
    const url = new URL(`./${file}`, import.meta.url);
    try {
      return readFileSync(url);
    } catch {
      throw new Error(`wasm backend: ${url.pathname} is missing; build it with "npm run build:wasm"`);
    }
  };
  compiled = compileKernels(load('kernels-relaxed.wasm'), () => load('kernels.wasm'));
  return compiled;
}

/** Whether the loaded kernels use relaxed-SIMD fused multiply-add (false on Node 20). */
export function wasmUsesRelaxedSimd(): boolean {
  return kernelModule().relaxed;
}

export async function createWasmBackend(opts: { threads?: number } = {}): Promise<Backend> {
  const threads = opts.threads ?? Math.min(availableParallelism(), MAX_THREADS);
  checkThreads(threads, opts.threads);
  const { module } = kernelModule();
  const memory = newKernelMemory();
  const instance = new WA.Instance(module, { env: { memory } });
  const syncBuf = new SharedArrayBuffer(SYNC_WORDS * 4);
  const sync = new Int32Array(syncBuf);
  const workers: Worker[] = [];
  const ready: Promise<void>[] = [];
  for (let tid = 1; tid < threads; tid++) {
    const w = new Worker(new URL('./worker.js', import.meta.url), {
      workerData: { module, memory, sync: syncBuf, ctrl: CTRL, tid, workers: threads - 1 },
    });
    ready.push(
      new Promise<void>((resolve, reject) => {
        w.once('message', () => resolve());
        w.once('error', reject);
        w.once('exit', (code) => reject(new Error(`wasm backend: worker ${tid} exited with code ${code} during start-up`)));
      }),
    );
    workers.push(w);
  }
  try {
    await Promise.all(ready);
  } catch (e) {
    for (const w of workers) void w.terminate();
    throw e;
  }
  for (const w of workers) {
    w.removeAllListeners('exit');
    w.removeAllListeners('error');
    // A worker error after start-up must not crash the process; the job reports it instead.
    w.on('error', () => {});
    w.unref();
  }
  return new WasmBackend(threads, memory, instance, workers, sync);
}
