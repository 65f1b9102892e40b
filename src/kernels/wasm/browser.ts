/**
 * The `wasm` backend's browser loader: fetches the kernels and runs the pool on module Web
 * Workers. Calls block in Atomics.wait, which browsers allow only off the main thread, so the
 * engine itself belongs in a dedicated Worker. Threads need a cross-origin isolated page
 * (COOP/COEP headers: SharedArrayBuffer and posting shared memory to workers); elsewhere, and
 * on the main thread, the backend runs single-threaded in the calling thread. Where the engine
 * refuses shared memory altogether (some browsers outside isolated pages), the single thread
 * uses kernels-single.wasm, the same kernels over an unshared memory.
 */
import type { Backend } from '../../tensor/backend.js';
import { SYNC_WORDS } from './sync.js';
import { WA, type WasmModule } from './wa.js';
import { CTRL, MAX_THREADS, WasmBackend, checkThreads, compileKernels, newKernelMemory } from './backend.js';

interface WebWorker {
  postMessage(msg: unknown): void;
  terminate(): void;
  onmessage: ((e: unknown) => void) | null;
  onerror: ((e: { message?: string }) => void) | null;
}
interface BrowserGlobals {
  Worker?: new (url: URL | string, opts: { type: 'module'; name?: string }) => WebWorker;
  crossOriginIsolated?: boolean;
  navigator?: { hardwareConcurrency?: number };
  WorkerGlobalScope?: unknown;
  document?: unknown;
  location?: { href: string };
  SharedArrayBuffer?: unknown;
}
const g = globalThis as unknown as BrowserGlobals;

export interface BrowserWasmOptions {
  /** Threads including the calling one; default: the cores (at most 16) where threads are possible, else 1. */
  threads?: number;
  /** Where kernels.wasm, kernels-relaxed.wasm, kernels-single.wasm and web-worker.js live (default: next to this module). */
  baseUrl?: string | URL;
  /** false: one thread over unshared memory (default: shared memory where the engine allows it). */
  sharedMemory?: boolean;
}

/** Whether this engine creates shared WebAssembly memory here (not every browser does outside isolated pages). */
export function sharedWasmMemoryAvailable(): boolean {
  try {
    newKernelMemory().grow(0);
    return true;
  } catch {
    return false;
  }
}

/** Whether this context can run kernel worker threads: cross-origin isolated, inside a Worker. */
export function browserThreadsAvailable(): boolean {
  return g.crossOriginIsolated === true && typeof g.SharedArrayBuffer === 'function' && g.document === undefined && typeof g.Worker === 'function';
}

/** Default thread count for this context (1 where threads are not possible). */
export function browserDefaultThreads(): number {
  return browserThreadsAvailable() ? Math.max(1, Math.min(g.navigator?.hardwareConcurrency ?? 1, MAX_THREADS)) : 1;
}

const modules = new Map<string, Promise<{ module: WasmModule; relaxed: boolean }>>();

async function fetchBytes(url: URL): Promise<Uint8Array> {
  let res: Response;
  try {
    res = await fetch(url);
  } catch (e) {
    throw new Error(`wasm backend: cannot fetch ${url.href}: ${(e as Error).message}`);
  }
  if (!res.ok) throw new Error(`wasm backend: fetching ${url.href} failed with HTTP ${res.status}`);
  return new Uint8Array(await res.arrayBuffer());
}

function kernelModule(base: URL): Promise<{ module: WasmModule; relaxed: boolean }> {
  let p = modules.get(base.href);
  if (!p) {
    p = (async () => {
      const [relaxed, plain] = await Promise.all([fetchBytes(new URL('kernels-relaxed.wasm', base)), fetchBytes(new URL('kernels.wasm', base))]);
      return compileKernels(relaxed, () => plain);
    })();
    p.catch(() => modules.delete(base.href));
    modules.set(base.href, p);
  }
  return p;
}

let single: Promise<WasmModule> | null = null;
function singleModule(base: URL): Promise<WasmModule> {
  single ??= fetchBytes(new URL('kernels-single.wasm', base)).then((b) => new WA.Module(b));
  single.catch(() => (single = null));
  return single;
}

/** Whether the kernels fetched from `baseUrl` use relaxed-SIMD fused multiply-add. */
export async function browserWasmUsesRelaxedSimd(baseUrl?: string | URL): Promise<boolean> {
  return (await kernelModule(new URL(baseUrl ?? './', baseUrl ? g.location?.href : import.meta.url))).relaxed;
}

export async function createBrowserWasmBackend(opts: BrowserWasmOptions = {}): Promise<Backend> {
  const threads = opts.threads ?? browserDefaultThreads();
  checkThreads(threads, opts.threads);
  if (threads > 1 && !browserThreadsAvailable()) {
    throw new Error(
      `wasm backend: ${threads} threads need a cross-origin isolated page (COOP/COEP headers) and a dedicated Worker (Atomics.wait is not allowed on the main thread); use threads: 1 here`,
    );
  }
  const base = new URL(opts.baseUrl ?? './', opts.baseUrl ? g.location?.href : import.meta.url);
  const shared = opts.sharedMemory ?? sharedWasmMemoryAvailable();
  if (!shared && threads > 1)
    throw new Error(
      `wasm backend: ${threads} threads need shared WebAssembly memory, which ${opts.sharedMemory === false ? 'sharedMemory: false turned off' : 'this engine refuses here'}; use threads: 1`,
    );
  const { module } = shared ? await kernelModule(base) : { module: await singleModule(base) };
  const memory = newKernelMemory(shared);
  const instance = new WA.Instance(module, { env: { memory } });
  // Single-threaded, nothing else waits on it: a plain buffer works without isolation.
  const sync = new Int32Array(threads > 1 ? new SharedArrayBuffer(SYNC_WORDS * 4) : new ArrayBuffer(SYNC_WORDS * 4));
  const workers: WebWorker[] = [];
  const ready: Promise<void>[] = [];
  for (let tid = 1; tid < threads; tid++) {
    const w = new g.Worker!(new URL('web-worker.js', base), { type: 'module', name: `moe-ts wasm kernels ${tid}` });
    ready.push(
      new Promise<void>((resolve, reject) => {
        w.onmessage = () => resolve();
        w.onerror = (e) => reject(new Error(`wasm backend: kernel worker ${tid} failed to start: ${e.message ?? 'error'} (${new URL('web-worker.js', base).href})`));
      }),
    );
    w.postMessage({ module, memory, sync: sync.buffer, ctrl: CTRL, tid, workers: threads - 1 });
    workers.push(w);
  }
  try {
    await Promise.all(ready);
  } catch (e) {
    for (const w of workers) w.terminate();
    throw e;
  }
  for (const w of workers) {
    w.onmessage = null;
    w.onerror = null;
  }
  return new WasmBackend(threads, memory, instance, workers, sync);
}
