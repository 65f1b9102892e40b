/**
 * Backend selection. The js reference backend is registered on import so tensors always work;
 * `initBackend()` switches to the fastest available one (native > wasm > js), or the one named
 * by the argument or MOE_BACKEND, with MOE_THREADS worker threads.
 */
import os from 'node:os';
import { setBackend, getBackend, type Backend } from '../tensor/backend.js';
import { JsBackend } from './js.js';
import './register-js.js';

export type BackendName = 'js' | 'wasm' | 'native';
export const BACKEND_NAMES: readonly BackendName[] = ['native', 'wasm', 'js'];

export interface BackendOptions {
  threads?: number;
}

/** Create (but do not activate) a backend by name. */
export async function createBackend(name: BackendName, opts: BackendOptions = {}): Promise<Backend> {
  switch (name) {
    case 'js':
      return new JsBackend();
    case 'wasm': {
      const { createWasmBackend } = await import('./wasm/index.js');
      return createWasmBackend(opts);
    }
    case 'native': {
      const { createNativeBackend } = await import('./native/index.js');
      return createNativeBackend(opts);
    }
    default:
      throw new Error(`unknown backend "${String(name)}": expected one of ${BACKEND_NAMES.join(', ')}`);
  }
}

function parseThreads(v: string | undefined): number | undefined {
  if (v === undefined || v === '') return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > 256) throw new Error(`MOE_THREADS must be a positive integer, got "${v}"`);
  return n;
}

/**
 * Activate a backend: 'auto' (default) tries native, then wasm, then js. An explicitly named
 * backend that fails to load is an error, not a silent fallback.
 */
export async function initBackend(name: string = process.env.MOE_BACKEND ?? 'auto', opts: BackendOptions = {}): Promise<Backend> {
  const threads = opts.threads ?? parseThreads(process.env.MOE_THREADS) ?? Math.max(1, Math.min(os.availableParallelism(), 8));
  const prev = getBackend();
  let chosen: Backend | null = null;
  if (name === 'auto') {
    for (const n of BACKEND_NAMES) {
      try {
        chosen = await createBackend(n, { threads });
        break;
      } catch {
        // try the next one; js cannot fail
      }
    }
  } else {
    if (!(BACKEND_NAMES as readonly string[]).includes(name)) {
      throw new Error(`unknown backend "${name}" (from MOE_BACKEND or --backend): expected auto, ${BACKEND_NAMES.join(', ')}`);
    }
    chosen = await createBackend(name as BackendName, { threads });
  }
  if (!chosen) chosen = new JsBackend();
  if (prev !== chosen && prev.name !== 'js') prev.dispose();
  setBackend(chosen);
  return chosen;
}

/** Release the active backend's workers/sessions and fall back to js. */
export function disposeBackend(): void {
  const b = getBackend();
  b.dispose();
  setBackend(new JsBackend());
}

export { getBackend, setBackend };
export { JsBackend, refMatmul, refGroupedMatmul, refGroupedMatmulTN } from './js.js';
