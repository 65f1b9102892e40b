/**
 * Backend selection in a browser: 'auto' takes the wasm backend (threads where the page is
 * cross-origin isolated and this runs in a Worker), else js. Mirrors kernels/index.ts, which
 * is Node's (native backend, worker_threads, MOE_BACKEND/MOE_THREADS).
 */
import { setBackend, getBackend, type Backend } from '../tensor/backend.js';
import { JsBackend } from './js.js';
import { createBrowserWasmBackend, type BrowserWasmOptions } from './wasm/browser.js';

export { browserThreadsAvailable, browserDefaultThreads, browserWasmUsesRelaxedSimd, createBrowserWasmBackend, type BrowserWasmOptions } from './wasm/browser.js';

/** Activate 'auto' | 'wasm' | 'js'. An explicitly named backend that fails to load is an error. */
export async function initBrowserBackend(name: 'auto' | 'wasm' | 'js' = 'auto', opts: BrowserWasmOptions = {}): Promise<Backend> {
  if (name !== 'auto' && name !== 'wasm' && name !== 'js') throw new Error(`unknown backend "${String(name)}": expected auto, wasm or js (native is Node-only)`);
  let chosen: Backend;
  if (name === 'js') chosen = new JsBackend();
  else if (name === 'wasm') chosen = await createBrowserWasmBackend(opts);
  else {
    try {
      chosen = await createBrowserWasmBackend(opts);
    } catch {
      chosen = new JsBackend();
    }
  }
  const prev = getBackend();
  if (prev !== chosen && prev.name !== 'js') prev.dispose();
  setBackend(chosen);
  return chosen;
}
