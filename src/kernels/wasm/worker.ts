/** Node side of the wasm kernel pool: a worker_threads worker running the shared job loop. */
import { parentPort, workerData } from 'node:worker_threads';
import { serveJobs, type WorkerInit } from './pool.js';

serveJobs(workerData as WorkerInit, () => parentPort!.postMessage('ready'));
