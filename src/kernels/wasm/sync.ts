/** Slots of the small SharedArrayBuffer (Int32Array) that wakes the wasm kernel workers. */
/** Job generation: bumped by the main thread to start a job; workers wait on it. */
export const S_GEN = 0;
/** Number of workers that finished the current job. */
export const S_DONE = 1;
/** Non-zero: workers exit at the next wake-up. */
export const S_STOP = 2;
/** Non-zero: the tid of a worker whose kernel call threw during the current job. */
export const S_ERROR = 3;
export const SYNC_WORDS = 16;
