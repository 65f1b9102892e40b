/**
 * Runs the wasm kernel cases (test/kernels/wasm-cases.ts, the same ones the Node test runs) in a
 * browser Worker on the browser loader, unbundled: this file and the library are tsc's output
 * served as plain ES modules. Posts { threads, results: [{ name, error? }] }.
 */
import { createBrowserWasmBackend } from '../../src/kernels/wasm/browser.js';
import { kernelCases, type Assert } from '../kernels/wasm-cases.js';

const fmt = (v: unknown): string => {
  try {
    return JSON.stringify(v) ?? String(v);
  } catch {
    return String(v);
  }
};
const miniAssert: Assert = {
  equal(a, b, message) {
    if (!Object.is(a, b)) throw new Error(message ?? `${fmt(a)} !== ${fmt(b)}`);
  },
  deepEqual(a, b, message) {
    const x = ArrayBuffer.isView(a) ? Array.from(a as unknown as ArrayLike<number>) : a;
    const y = ArrayBuffer.isView(b) ? Array.from(b as unknown as ArrayLike<number>) : b;
    if (fmt(x) !== fmt(y)) throw new Error(message ?? `${fmt(x)} does not deep-equal ${fmt(y)}`);
  },
  fail(message) {
    throw new Error(message);
  },
  throws(fn, expected) {
    try {
      fn();
    } catch (e) {
      if (!expected.test((e as Error).message)) throw new Error(`threw "${(e as Error).message}", expected ${expected}`);
      return;
    }
    throw new Error(`did not throw (expected ${expected})`);
  },
};

interface Scope {
  onmessage: ((e: { data: { threads: number; sharedMemory?: boolean } }) => void) | null;
  postMessage(msg: unknown): void;
}
const scope = globalThis as unknown as Scope;
scope.onmessage = async (e) => {
  try {
    const be = await createBrowserWasmBackend({ threads: e.data.threads, ...(e.data.sharedMemory !== undefined ? { sharedMemory: e.data.sharedMemory } : {}) });
    const results: { name: string; error?: string }[] = [];
    for (const c of kernelCases(miniAssert)) {
      try {
        c.run(be, miniAssert);
        results.push({ name: c.name });
      } catch (err) {
        results.push({ name: c.name, error: (err as Error).message });
      }
    }
    be.dispose();
    scope.postMessage({ threads: be.threads, name: be.name, results });
  } catch (err) {
    scope.postMessage({ fatal: (err as Error).message });
  }
};
