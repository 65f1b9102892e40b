/**
 * Kernel throughput: matmul and grouped matmul (the MoE expert GEMM) on every moe-ts backend at
 * each thread count, next to the same matmuls through peer libraries (TensorFlow.js' wasm
 * backend, jax-js' wasm device). Every implementation's output is checked against the js
 * reference once, so a fast wrong kernel shows up as WRONG rather than as a good number.
 */
import { createRequire } from 'node:module';
import { createBackend, refGroupedMatmul, refMatmul, type BackendName } from '../../src/kernels/index.js';
import type { Backend } from '../../src/tensor/backend.js';
import { Rng } from '../../src/tensor/random.js';
import { gflops, matmulFlops, measure, type MeasureOptions } from '../lib/timing.js';
import { runIsolated } from '../lib/isolate.js';
import type { Column, Row, SuiteOptions, SuiteTable } from '../lib/suite.js';

export const name = 'kernels';
export const description = 'matmul / grouped-matmul GFLOP/s per backend and thread count, vs tfjs-wasm and jax-js';

type CaseKind = 'matmul' | 'grouped';

interface KernelCase {
  id: string;
  kind: CaseKind;
  shape: string;
  m: number;
  k: number;
  n: number;
  /** grouped: experts x tokens per expert (m = experts * tokens). */
  experts?: number;
  tokens?: number;
  /** For a plain matmul that is the same total work as a grouped case. */
  plainOf?: string;
  /** Peers run the plain matmul cases that are in the brief's list (not the plain-equivalents). */
  peers: boolean;
  /** Run on the js reference backend (~1-2.5 GFLOP/s: only the shapes that take well under a second). */
  js: boolean;
}

function mm(id: string, m: number, k: number, n: number, extra: Partial<KernelCase> = {}): KernelCase {
  return { id, kind: 'matmul', shape: `[${m}x${k}]x[${k}x${n}]`, m, k, n, peers: true, js: true, ...extra };
}

function grouped(id: string, experts: number, tokens: number, k: number, n: number, js: boolean): KernelCase {
  return {
    id,
    kind: 'grouped',
    shape: `${experts}x[${tokens}x${k}]x[${k}x${n}]`,
    m: experts * tokens,
    k,
    n,
    experts,
    tokens,
    peers: false,
    js,
  };
}

export const CASES: readonly KernelCase[] = [
  mm('mm 512', 512, 512, 2048),
  mm('mm 64', 64, 512, 2048),
  // 17 GFLOP (~7 s per call on the js reference): real backends and peers only
  mm('mm 2048', 2048, 2048, 2048, { js: false }),
  // 4.3 GFLOP each (2-8 s per call in js)
  grouped('grouped 8x512', 8, 512, 512, 1024, false),
  mm('plain 8x512', 8 * 512, 512, 1024, { plainOf: 'grouped 8x512', peers: false, js: false }),
  grouped('grouped 64x64', 64, 64, 512, 128, true),
  mm('plain 64x64', 64 * 64, 512, 128, { plainOf: 'grouped 64x64', peers: false }),
];

/** Cases whose output is compared with the js reference (cheap enough to compute in js). */
const CHECKED = new Set(['mm 64', 'grouped 64x64']);
/** Max |out - ref| / max |ref| allowed: float32 sums of 512 products in another order. */
const CHECK_TOL = 1e-4;

export function caseFlops(c: KernelCase): number {
  return matmulFlops(c.m, c.k, c.n);
}

interface Inputs {
  a: Float32Array;
  b: Float32Array;
  sizes?: Int32Array;
}

class InputCache {
  private cache = new Map<string, Inputs>();
  private refs: Map<string, Float32Array>;
  /** `refs`: reference outputs already computed (by the parent, once for all child processes). */
  constructor(
    private readonly seed: number,
    refs: Record<string, Float32Array> = {},
  ) {
    this.refs = new Map(Object.entries(refs));
  }

  allRefs(): Record<string, Float32Array> {
    for (const c of CASES) if (CHECKED.has(c.id)) this.ref(c);
    return Object.fromEntries(this.refs);
  }

  get(c: KernelCase): Inputs {
    let v = this.cache.get(c.id);
    if (!v) {
      // one seed per case, so a case's inputs do not depend on which other cases run
      const rng = new Rng(this.seed + CASES.indexOf(c) * 7919);
      const a = rng.fillUniform(new Float32Array(c.m * c.k), -1, 1);
      const bLen = c.kind === 'grouped' ? c.experts! * c.k * c.n : c.k * c.n;
      const b = rng.fillUniform(new Float32Array(bLen), -1, 1);
      v = c.kind === 'grouped' ? { a, b, sizes: new Int32Array(c.experts!).fill(c.tokens!) } : { a, b };
      this.cache.set(c.id, v);
    }
    return v;
  }

  ref(c: KernelCase): Float32Array {
    let r = this.refs.get(c.id);
    if (!r) {
      const x = this.get(c);
      r = c.kind === 'grouped' ? refGroupedMatmul(x.a, x.b, x.sizes!, c.k, c.n) : refMatmul(x.a, x.b, c.m, c.k, c.n);
      this.refs.set(c.id, r);
    }
    return r;
  }
}

/** Relative max error of `out` against `ref`, or a reason the output is unusable. */
export function relMaxError(out: ArrayLike<number>, ref: Float32Array): number {
  if (out.length !== ref.length) return Infinity;
  let scale = 0;
  let err = 0;
  for (let i = 0; i < ref.length; i++) {
    scale = Math.max(scale, Math.abs(ref[i]));
    const d = Math.abs(out[i] - ref[i]);
    if (!(d <= err)) err = Number.isNaN(d) ? Infinity : d;
  }
  return scale > 0 ? err / scale : err;
}

function measureOptions(c: KernelCase, quick: boolean): MeasureOptions {
  const big = caseFlops(c) > 5e9;
  if (quick) return { warmup: big ? 0 : 1, minReps: 1, minTimeMs: 100, maxTimeMs: 5000 };
  return { warmup: 1, minReps: big ? 2 : 3, minTimeMs: 1000, maxTimeMs: 15000 };
}

/** Keeps outputs observable so no engine can drop the work. */
let sink = 0;

function firstLine(e: unknown): string {
  const msg = e instanceof Error ? e.message : String(e);
  const line = msg.split('\n')[0].trim();
  return line.length > 110 ? line.slice(0, 107) + '...' : line;
}

interface Impl {
  impl: string;
  threads: number;
  note?: string;
  /** Returns a function computing case `c` whose result (or its promise) is the full output. */
  prepare(c: KernelCase, x: Inputs): { fn: () => unknown; output: () => Promise<ArrayLike<number>>; cleanup?: () => void };
}

function baseRow(c: KernelCase | null, impl: string, threads: number | string): Row {
  return {
    case: c?.id ?? '(all)',
    shape: c?.shape ?? '',
    impl,
    threads,
    status: 'ok',
    gflops: null,
    bestGflops: null,
    medianMs: null,
    bestMs: null,
    reps: null,
    flops: c ? caseFlops(c) : null,
    note: '',
  };
}

type Emit = (row: Row) => void;

async function runImpl(impl: Impl, cases: readonly KernelCase[], inputs: InputCache, opts: TaskOptions, emit: Emit): Promise<void> {
  for (const c of cases) {
    const row = baseRow(c, impl.impl, impl.threads);
    const notes: string[] = impl.note ? [impl.note] : [];
    let cleanup: (() => void) | undefined;
    try {
      const x = inputs.get(c);
      const p = impl.prepare(c, x);
      cleanup = p.cleanup;
      if (CHECKED.has(c.id)) {
        const err = relMaxError(await p.output(), inputs.ref(c));
        if (!(err <= CHECK_TOL)) {
          row.status = 'WRONG';
          notes.push(`output differs from js reference: rel max err ${err.toExponential(2)}`);
        }
      }
      const t = await measure(
        () => {
          const r = p.fn();
          if (r instanceof Float32Array) sink += r[0];
          return r;
        },
        measureOptions(c, opts.quick),
      );
      const flops = caseFlops(c);
      Object.assign(row, {
        gflops: gflops(flops, t.medianMs),
        bestGflops: gflops(flops, t.bestMs),
        medianMs: t.medianMs,
        bestMs: t.bestMs,
        reps: t.reps,
        samplesMs: t.samplesMs.map((s) => Math.round(s * 1000) / 1000),
      });
      opts.log(`  ${impl.impl} t=${impl.threads} ${c.id}: ${(row.gflops as number).toFixed(2)} GFLOP/s (median of ${t.reps})`);
    } catch (e) {
      row.status = 'error';
      notes.push(firstLine(e));
      opts.log(`  ${impl.impl} t=${impl.threads} ${c.id}: error: ${firstLine(e)}`);
    } finally {
      try {
        cleanup?.();
      } catch {
        /* a failing cleanup must not hide the measurement */
      }
    }
    row.note = notes.join('; ');
    emit(row);
  }
}

function ourImpl(b: Backend, asked: number): Impl {
  return {
    impl: b.name,
    threads: b.threads,
    note: b.threads !== asked ? `asked for ${asked} threads, backend uses ${b.threads}` : undefined,
    prepare(c, x) {
      const fn = c.kind === 'grouped' ? () => b.groupedMatmul(x.a, x.b, x.sizes!, c.k, c.n) : () => b.matmul(x.a, x.b, c.m, c.k, c.n);
      return { fn, output: async () => fn() };
    },
  };
}

function casesFor(backend: string): KernelCase[] {
  if (backend !== 'js') return [...CASES];
  return CASES.filter((c) => c.js);
}

async function runOurBackend(name: string, t: number, opts: TaskOptions, inputs: InputCache, emit: Emit): Promise<void> {
  opts.log(`[kernels] ${name} threads=${t}`);
  let b: Backend;
  try {
    b = await createBackend(name as BackendName, { threads: t });
  } catch (e) {
    const row = baseRow(null, name, t);
    row.status = 'unavailable';
    row.note = firstLine(e);
    opts.log(`  ${name}: unavailable: ${firstLine(e)}`);
    emit(row);
    return;
  }
  try {
    await runImpl(ourImpl(b, t), casesFor(name), inputs, opts, emit);
    for (const c of CASES.filter((x) => !casesFor(name).includes(x))) {
      const row = baseRow(c, name, b.threads);
      row.status = 'skipped';
      row.note = `js reference: skipped (${(caseFlops(c) / 1e9).toFixed(1)} GFLOP per call)`;
      emit(row);
    }
  } finally {
    b.dispose();
  }
}

// ---- peers ---------------------------------------------------------------------------------------

/* eslint-disable @typescript-eslint/no-explicit-any */
type Any = any;

const requireFromHere = createRequire(import.meta.url);

function peerUnavailable(impl: string, threads: number | string, why: string): Row {
  const row = baseRow(null, impl, threads);
  row.status = 'unavailable';
  row.note = why;
  return row;
}

/** TensorFlow.js with @tensorflow/tfjs-backend-wasm (XNNPACK kernels). */
async function runTfjs(opts: TaskOptions, cases: readonly KernelCase[], inputs: InputCache, emit: Emit): Promise<void> {
  let tf: Any;
  let tfw: Any;
  try {
    // the packages' "main" is a CommonJS bundle; their ESM build has extensionless imports Node rejects
    tf = requireFromHere('@tensorflow/tfjs-core');
    tfw = requireFromHere('@tensorflow/tfjs-backend-wasm');
    // thread count is fixed when the backend initialises, so ask for the most we will report
    tfw.setThreadsCount?.(Math.max(...opts.threads));
    if (!(await tf.setBackend('wasm'))) throw new Error('tf.setBackend("wasm") returned false');
    await tf.ready();
  } catch (e) {
    emit(peerUnavailable('tfjs-wasm', 1, `failed to load: ${firstLine(e)}`));
    return;
  }
  const simd = Boolean(tf.env().getBool('WASM_HAS_SIMD_SUPPORT'));
  const mt = Boolean(tf.env().getBool('WASM_HAS_MULTITHREAD_SUPPORT'));
  const threads = mt ? Number(tfw.getThreadsCount?.() ?? 1) : 1;
  const impl: Impl = {
    impl: 'tfjs-wasm',
    threads,
    note: `${simd ? 'SIMD' : 'no SIMD'}${mt ? '' : ', single-threaded'}`,
    prepare(c, x) {
      const a = tf.tensor2d(x.a, [c.m, c.k]);
      const b = tf.tensor2d(x.b, [c.k, c.n]);
      const fn = async () => {
        const out = tf.matMul(a, b);
        // data() waits for the kernel and copies the result out, like our backends return it
        const d = await out.data();
        out.dispose();
        sink += d[0];
        return d;
      };
      return { fn, output: fn, cleanup: () => (a.dispose(), b.dispose()) };
    },
  };
  opts.log(`[kernels] tfjs-wasm threads=${threads}`);
  await runImpl(impl, cases, inputs, opts, emit);
  for (const t of opts.threads) {
    if (t !== threads) {
      emit(peerUnavailable('tfjs-wasm', t, mt ? `runs with ${threads} threads (fixed at init)` : 'multithreaded wasm unavailable in Node (WASM_HAS_MULTITHREAD_SUPPORT=false)'));
    }
  }
}

/** jax-js on its "wasm" device (generated WebAssembly kernels). */
async function runJax(opts: TaskOptions, cases: readonly KernelCase[], inputs: InputCache, emit: Emit): Promise<void> {
  let jax: Any;
  try {
    // a variable specifier keeps tsc from needing the package's types (it is an optional peer)
    const spec = '@jax-js/jax';
    jax = await import(spec);
    // init() with no argument also probes WebGPU through `navigator`, which Node 20 lacks
    const devs: string[] = await jax.init('wasm');
    if (!devs.includes('wasm')) throw new Error(`wasm device not initialised (got ${devs.join(', ') || 'none'})`);
    jax.defaultDevice('wasm');
  } catch (e) {
    emit(peerUnavailable('jax-js', 1, `failed to load: ${firstLine(e)}`));
    return;
  }
  const np = jax.numpy;
  // jax-js only spreads kernels over threads when a global Web Worker and SharedArrayBuffer exist
  const hasWorkers = typeof (globalThis as Any).Worker !== 'undefined' && typeof SharedArrayBuffer !== 'undefined';
  const threads = hasWorkers ? Number((globalThis as Any).navigator?.hardwareConcurrency ?? 4) : 1;
  const impl: Impl = {
    impl: 'jax-js',
    threads,
    note: hasWorkers ? 'wasm device, workers' : 'wasm device, single-threaded (no Web Worker global in Node)',
    prepare(c, x) {
      const a = np.array(x.a).reshape([c.m, c.k]);
      const b = np.array(x.b).reshape([c.k, c.n]);
      const fn = async () => {
        // jax-js arguments are consumed (refcounted): pass new references, keep a and b alive
        const out = np.matmul(a.ref, b.ref);
        // data() realises the lazy graph, waits for the kernel, copies out and disposes `out`
        const d = await out.data();
        sink += d[0];
        return d;
      };
      return { fn, output: fn, cleanup: () => (a.dispose(), b.dispose()) };
    },
  };
  opts.log(`[kernels] jax-js threads=${threads}`);
  await runImpl(impl, cases, inputs, opts, emit);
  for (const t of opts.threads) {
    if (t !== threads) emit(peerUnavailable('jax-js', t, hasWorkers ? `uses ${threads} workers` : 'no Web Worker global in Node 20: single-threaded only'));
  }
}

// ---- tasks: one per backend configuration or peer, each in its own process by default --------------

export type Task = { type: 'ours'; backend: string; threads: number } | { type: 'tfjs-wasm' } | { type: 'jax-js' };

type TaskOptions = SuiteOptions;

export interface TaskArg {
  task: Task;
  /** The log function cannot cross a process boundary; the task logs to its stderr. */
  opts: Omit<SuiteOptions, 'log'>;
  refs: Record<string, Float32Array>;
}

const PEER_CASES = CASES.filter((c) => c.peers);

function taskLabel(t: Task): string {
  return t.type === 'ours' ? `${t.backend} threads=${t.threads}` : t.type;
}

/** Rows a task would produce per case, used to mark the cases a dead task never reported. */
function taskCases(t: Task): { impl: string; threads: number; cases: readonly KernelCase[] } {
  if (t.type === 'ours') return { impl: t.backend, threads: t.threads, cases: casesFor(t.backend) };
  return { impl: t.type, threads: 1, cases: PEER_CASES };
}

export function planTasks(opts: Pick<SuiteOptions, 'peers' | 'backends' | 'threads'>): Task[] {
  const tasks: Task[] = [];
  // peers first: they leave no threads behind, while a native backend's pool may linger briefly
  if (opts.peers) tasks.push({ type: 'tfjs-wasm' }, { type: 'jax-js' });
  for (const backend of opts.backends) {
    // the js reference is single-threaded whatever it is asked
    for (const threads of backend === 'js' ? [1] : opts.threads) tasks.push({ type: 'ours', backend, threads });
  }
  return tasks;
}

/** Entry point of one task (in a child process via isolate.ts, or in-process with --in-process). */
export async function runTask(arg: TaskArg, emit: Emit): Promise<void> {
  const opts: TaskOptions = { ...arg.opts, log: (msg) => process.stderr.write(msg + '\n') };
  const inputs = new InputCache(opts.seed, arg.refs);
  const t = arg.task;
  if (t.type === 'ours') await runOurBackend(t.backend, t.threads, opts, inputs, emit);
  else if (t.type === 'tfjs-wasm') await runTfjs(opts, PEER_CASES, inputs, emit);
  else await runJax(opts, PEER_CASES, inputs, emit);
  if (sink === 0.123456789) opts.log('');
}

function taskTimeoutMs(opts: SuiteOptions): number {
  return (opts.quick ? 120 : 300) * 1000;
}

export async function run(opts: SuiteOptions): Promise<Row[]> {
  const { log, ...plain } = opts;
  // reference outputs for the correctness checks: computed once here rather than in every child
  const refs = new InputCache(opts.seed).allRefs();
  const rows: Row[] = [];
  for (const task of planTasks(opts)) {
    const arg: TaskArg = { task, opts: plain, refs };
    if (!opts.isolate) {
      await runTask(arg, (r) => rows.push(r));
      continue;
    }
    const res = await runIsolated<void>(import.meta.url, 'runTask', arg, { timeoutMs: taskTimeoutMs(opts) });
    const got = res.partial as Row[];
    rows.push(...got);
    if (!res.ok) {
      log(`  ${taskLabel(task)}: ${res.reason}: ${firstLine(res.error)}`);
      const { impl, threads, cases } = taskCases(task);
      const missing = cases.filter((c) => !got.some((r) => r.case === c.id));
      const dead = (c: KernelCase | null): Row => ({ ...baseRow(c, impl, threads), status: res.reason, note: firstLine(res.error) });
      // a task that died before its first case (or after its last) gets one summary row
      if (got.length === 0 || missing.length === 0) rows.push(dead(null));
      else for (const c of missing) rows.push(dead(c));
    }
  }
  return sortRows(rows);
}

// ---- tables --------------------------------------------------------------------------------------

const IMPL_ORDER = ['js', 'wasm', 'native', 'tfjs-wasm', 'jax-js'];

function sortKey(r: Row): [number, number, number] {
  const ci = CASES.findIndex((c) => c.id === r.case);
  return [ci < 0 ? CASES.length : ci, IMPL_ORDER.indexOf(String(r.impl)), Number(r.threads) || 0];
}

export function sortRows(rows: readonly Row[]): Row[] {
  return [...rows].sort((x, y) => {
    const a = sortKey(x);
    const b = sortKey(y);
    return a[0] - b[0] || a[1] - b[1] || a[2] - b[2];
  });
}

export const columns: Column[] = [
  { key: 'case', header: 'case' },
  { key: 'shape', header: 'shape' },
  { key: 'impl', header: 'impl' },
  { key: 'threads', header: 'thr', align: 'right' },
  { key: 'gflops', header: 'GFLOP/s', align: 'right', format: (v, r) => (r.status === 'ok' ? fmt(v) : r.status === 'WRONG' ? `WRONG ${fmt(v)}` : String(r.status)) },
  { key: 'bestGflops', header: 'best', align: 'right', format: (v) => fmt(v) },
  { key: 'medianMs', header: 'ms', align: 'right', format: (v) => fmt(v) },
  { key: 'reps', header: 'reps', align: 'right', format: (v) => fmt(v) },
  { key: 'note', header: 'note' },
];

function fmt(v: unknown): string {
  if (typeof v !== 'number' || !Number.isFinite(v)) return '-';
  if (Number.isInteger(v)) return String(v);
  return v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2);
}

export function ratio(ours: unknown, theirs: unknown): number | null {
  return typeof ours === 'number' && typeof theirs === 'number' && ours > 0 && theirs > 0 ? ours / theirs : null;
}

const fmtRatio = (v: unknown) => (typeof v === 'number' ? `${v.toFixed(2)}x` : 'n/a');

function okRows(rows: readonly Row[]): Row[] {
  return rows.filter((r) => r.status === 'ok' && typeof r.gflops === 'number');
}

/** Best median GFLOP/s of a peer on a case (peers have one usable configuration). */
function peerBest(rows: readonly Row[], impl: string, caseId: string): Row | null {
  const c = okRows(rows).filter((r) => r.impl === impl && r.case === caseId);
  return c.sort((a, b) => (b.gflops as number) - (a.gflops as number))[0] ?? null;
}

export function ratioTable(rows: readonly Row[]): SuiteTable {
  const out: Row[] = [];
  for (const c of CASES.filter((x) => x.peers)) {
    const tf = peerBest(rows, 'tfjs-wasm', c.id);
    const jx = peerBest(rows, 'jax-js', c.id);
    for (const r of sortRows(okRows(rows).filter((x) => x.case === c.id && (x.impl === 'wasm' || x.impl === 'native')))) {
      out.push({
        case: c.id,
        impl: r.impl,
        threads: r.threads,
        gflops: r.gflops,
        vsTfjs: ratio(r.gflops, tf?.gflops),
        tfjsThreads: tf?.threads ?? null,
        vsJax: ratio(r.gflops, jx?.gflops),
        jaxThreads: jx?.threads ?? null,
      });
    }
  }
  return {
    title: 'ours / peers (median GFLOP/s ratio; >1 means moe-ts is faster; peer thread count in brackets)',
    columns: [
      { key: 'case', header: 'case' },
      { key: 'impl', header: 'ours' },
      { key: 'threads', header: 'thr', align: 'right' },
      { key: 'gflops', header: 'GFLOP/s', align: 'right', format: (v) => fmt(v) },
      { key: 'vsTfjs', header: 'vs tfjs-wasm', align: 'right', format: (v, r) => (v === null ? 'n/a' : `${fmtRatio(v)} [${r.tfjsThreads}]`) },
      { key: 'vsJax', header: 'vs jax-js', align: 'right', format: (v, r) => (v === null ? 'n/a' : `${fmtRatio(v)} [${r.jaxThreads}]`) },
    ],
    rows: out,
  };
}

export function groupedTable(rows: readonly Row[]): SuiteTable {
  const out: Row[] = [];
  const ok = okRows(rows);
  for (const plain of CASES.filter((c) => c.plainOf)) {
    for (const g of sortRows(ok.filter((r) => r.case === plain.plainOf))) {
      const p = ok.find((r) => r.case === plain.id && r.impl === g.impl && r.threads === g.threads);
      out.push({
        case: g.case,
        impl: g.impl,
        threads: g.threads,
        grouped: g.gflops,
        plainShape: plain.shape,
        plain: p?.gflops ?? null,
        ratio: ratio(g.gflops, p?.gflops),
      });
    }
  }
  return {
    title: 'grouped vs plain (grouped GFLOP/s / one plain matmul of the same total work)',
    columns: [
      { key: 'case', header: 'case' },
      { key: 'impl', header: 'impl' },
      { key: 'threads', header: 'thr', align: 'right' },
      { key: 'grouped', header: 'grouped', align: 'right', format: (v) => fmt(v) },
      { key: 'plainShape', header: 'plain shape' },
      { key: 'plain', header: 'plain', align: 'right', format: (v) => fmt(v) },
      { key: 'ratio', header: 'grouped/plain', align: 'right', format: fmtRatio },
    ],
    rows: out,
  };
}

export function report(rows: Row[]): SuiteTable[] {
  return [ratioTable(rows), groupedTable(rows)];
}
