/**
 * The job loop every kernel worker runs (Node worker_threads and Web Workers alike): instantiate
 * the shared kernel module, then block in Atomics.wait for jobs for the rest of its life (it
 * never returns to its event loop; the owner terminates it). A job is just "call run(ctrl,
 * tid)": the job itself lives in shared wasm memory, written by the calling thread.
 */
import { S_DONE, S_ERROR, S_GEN, S_STOP } from './sync.js';
import { WA, type WasmMemory, type WasmModule } from './wa.js';

export interface WorkerInit {
  module: WasmModule;
  memory: WasmMemory;
  sync: SharedArrayBuffer;
  ctrl: number;
  tid: number;
  workers: number;
}

export function serveJobs(init: WorkerInit, ready: () => void): void {
  const instance = new WA.Instance(init.module, { env: { memory: init.memory } });
  const run = instance.exports.run as (ctrl: number, tid: number) => void;
  const sync = new Int32Array(init.sync);
  ready();
  let gen = Atomics.load(sync, S_GEN);
  for (;;) {
    Atomics.wait(sync, S_GEN, gen);
    const g = Atomics.load(sync, S_GEN);
    if (g === gen) continue;
    gen = g;
    if (Atomics.load(sync, S_STOP) !== 0) break;
    try {
      run(init.ctrl, init.tid);
    } catch {
      // The calling thread blocks on S_DONE, so a failure must still be counted, then reported.
      Atomics.store(sync, S_ERROR, init.tid);
    }
    if (Atomics.add(sync, S_DONE, 1) + 1 === init.workers) Atomics.notify(sync, S_DONE);
  }
}
