/**
 * Browser side of the wasm kernel pool: a module Web Worker that takes its init (compiled
 * module, shared memory, sync buffer) from the first message and then runs the job loop.
 */
import { serveJobs, type WorkerInit } from './pool.js';

interface WorkerScope {
  onmessage: ((e: { data: WorkerInit }) => void) | null;
  postMessage(msg: unknown): void;
}
const scope = globalThis as unknown as WorkerScope;

scope.onmessage = (e) => {
  scope.onmessage = null;
  serveJobs(e.data, () => scope.postMessage('ready'));
};
