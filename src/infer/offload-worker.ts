/**
 * The prefetch reader of expert offloading (offload.ts): reads requested byte ranges of the model
 * file into shared staging slots and flags each slot done (2) or failed (3) with Atomics, so the
 * decoding thread can check and wait synchronously, without returning to its event loop.
 */
import * as fs from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';

interface Init {
  paths: string[];
  staging: SharedArrayBuffer;
  state: SharedArrayBuffer;
}

/** One request: staging slot and [file index, file offset, length, offset in the staging buffer] ranges. */
interface Request {
  slot: number;
  reads: [number, number, number, number][];
}

const { paths, staging, state } = workerData as Init;
const fds = paths.map((p) => fs.openSync(p, 'r'));
const buf = new Uint8Array(staging);
const flags = new Int32Array(state);

parentPort!.on('message', (m: Request | 'close') => {
  if (m === 'close') {
    for (const fd of fds) fs.closeSync(fd);
    parentPort!.close();
    return;
  }
  let ok = true;
  try {
    for (const [file, off, len, dst] of m.reads) {
      let got = 0;
      while (got < len) {
        const r = fs.readSync(fds[file], buf, dst + got, len - got, off + got);
        if (r === 0) throw new Error('end of file');
        got += r;
      }
    }
  } catch {
    ok = false; // the decoding thread reads it again itself and reports the error
  }
  Atomics.store(flags, m.slot, ok ? 2 : 3);
  Atomics.notify(flags, m.slot);
});
