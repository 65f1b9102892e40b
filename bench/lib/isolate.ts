/**
 * Run one benchmark task in a child process. A backend that hangs (a worker that never wakes the
 * main thread's Atomics.wait cannot be interrupted in-process) or crashes then costs one row
 * marked "timeout"/"crashed" instead of the whole run, and each configuration starts without
 * the threads, pools and heap of the previous one, which also keeps measurements independent.
 *
 * The task is `export async function <exportName>(arg, emit)` of an ES module; what it passes to
 * `emit` (e.g. one row per finished case) survives a later hang or crash. Values travel over IPC
 * with structured clone ("advanced" serialization), so typed arrays survive.
 */
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export type IsolatedResult<T> = ({ ok: true; value: T } | { ok: false; reason: 'timeout' | 'crashed' | 'error'; error: string }) & {
  /** Values the task passed to `emit` before it finished or died, in order. */
  partial: unknown[];
};

export interface IsolateOptions {
  timeoutMs: number;
  /** Extra Node flags for the child (e.g. --max-old-space-size). */
  execArgv?: string[];
}

const CHILD = fileURLToPath(new URL('./child.js', import.meta.url));

export function runIsolated<T>(moduleUrl: string, exportName: string, arg: unknown, opts: IsolateOptions): Promise<IsolatedResult<T>> {
  return new Promise((resolve) => {
    const child = fork(CHILD, [], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      serialization: 'advanced',
      execArgv: opts.execArgv ?? [],
    });
    let settled = false;
    const partial: unknown[] = [];
    type Outcome = { ok: true; value: T } | { ok: false; reason: 'timeout' | 'crashed' | 'error'; error: string };
    const finish = (r: Outcome) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({ ...r, partial });
    };
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      finish({ ok: false, reason: 'timeout', error: `timed out after ${Math.round(opts.timeoutMs / 1000)} s (child killed)` });
    }, opts.timeoutMs);
    child.on('message', (m: { partial?: unknown; ok?: boolean; value?: T; error?: string }) => {
      if ('partial' in m) partial.push(m.partial);
      else if (m.ok) finish({ ok: true, value: m.value as T });
      else finish({ ok: false, reason: 'error', error: m.error ?? 'unknown error' });
    });
    child.on('error', (e) => finish({ ok: false, reason: 'crashed', error: `could not start child: ${e.message}` }));
    child.on('exit', (code, signal) => {
      finish({ ok: false, reason: 'crashed', error: `child exited (${signal ? `signal ${signal}` : `code ${code}`}) before reporting` });
    });
    child.send({ moduleUrl, exportName, arg });
  });
}
