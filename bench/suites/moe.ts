/**
 * MoE layer training throughput: forward + backward tokens/s of one MoELayer (topk router,
 * dropless dispatch, SwiGLU experts) at d=512, T=4096, for a coarse (E=8, k=2, ffn=1024) and a
 * fine-grained (E=64, k=8, ffn=128; DeepSeekMoE segmentation of the first with m=8) config,
 * per backend and thread count. The backend is wrapped to time the expert grouped matmuls, so
 * each row also shows the share of layer time outside them: the activation (timed standalone
 * at the same size) and the rest, routing + permute + combine, which the dispatch owns.
 */
import { performance } from 'node:perf_hooks';
import { createBackend, type BackendName } from '../../src/kernels/index.js';
import { getBackend, setBackend, type Backend, type GroupedMatmulOptions, type MatmulOptions } from '../../src/tensor/backend.js';
import { Tensor } from '../../src/tensor/tensor.js';
import { Rng } from '../../src/tensor/random.js';
import { swiglu } from '../../src/tensor/index.js';
import { MoELayer } from '../../src/moe/layer.js';
import type { RouterContext } from '../../src/moe/types.js';
import { measure, type MeasureOptions } from '../lib/timing.js';
import type { Column, Row, SuiteOptions, SuiteTable } from '../lib/suite.js';

export const name = 'moe';
export const description = 'MoE layer forward+backward tokens/s (d=512, T=4096, SwiGLU, topk, dropless) per backend; share of time outside the expert GEMMs';

interface MoECase {
  id: string;
  E: number;
  k: number;
  ffn: number;
}

export const D_MODEL = 512;
export const TOKENS = 4096;

export const CASES: readonly MoECase[] = [
  { id: 'E8 k2 f1024', E: 8, k: 2, ffn: 1024 },
  { id: 'E64 k8 f128', E: 64, k: 8, ffn: 128 },
];

/** Throughput targets (tokens/s) per backend and case; routing+permute+combine below 15%. */
export const TARGETS: Record<string, Record<string, number>> = {
  native: { 'E8 k2 f1024': 9600, 'E64 k8 f128': 7900 },
  wasm: { 'E8 k2 f1024': 2240, 'E64 k8 f128': 3950 },
};
export const MAX_OVERHEAD_SHARE = 0.15;

/** Delegates to a backend, adding up wall time spent in the grouped matmuls (and plain matmuls). */
class TimedBackend implements Backend {
  readonly name: Backend['name'];
  readonly threads: number;
  groupedMs = 0;
  matmulMs = 0;
  constructor(private readonly inner: Backend) {
    this.name = inner.name;
    this.threads = inner.threads;
  }
  reset(): void {
    this.groupedMs = 0;
    this.matmulMs = 0;
  }
  matmul(a: Float32Array, b: Float32Array, m: number, k: number, n: number, opts?: MatmulOptions): Float32Array {
    const t0 = performance.now();
    const r = this.inner.matmul(a, b, m, k, n, opts);
    this.matmulMs += performance.now() - t0;
    return r;
  }
  groupedMatmul(a: Float32Array, w: Float32Array, sizes: Int32Array, k: number, n: number, transB?: boolean, opts?: GroupedMatmulOptions): Float32Array {
    const t0 = performance.now();
    const r = this.inner.groupedMatmul(a, w, sizes, k, n, transB, opts);
    this.groupedMs += performance.now() - t0;
    return r;
  }
  groupedMatmulTN(a: Float32Array, g: Float32Array, sizes: Int32Array, k: number, n: number): Float32Array {
    const t0 = performance.now();
    const r = this.inner.groupedMatmulTN(a, g, sizes, k, n);
    this.groupedMs += performance.now() - t0;
    return r;
  }
  dispose(): void {
    this.inner.dispose();
  }
}

function measureOptions(quick: boolean): MeasureOptions {
  return quick ? { warmup: 1, minReps: 1, minTimeMs: 0, maxTimeMs: 20000 } : { warmup: 1, minReps: 3, minTimeMs: 3000, maxReps: 10, maxTimeMs: 30000 };
}

function randomTensor(rng: Rng, shape: number[], requiresGrad: boolean, std = 1): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  return new Tensor(rng.fillNormal(new Float32Array(n), std), shape, requiresGrad);
}

/** Forward+backward of the SwiGLU gate alone at the size the layer runs it (A rows x ffn). */
async function activationMs(rows: number, ffn: number, seed: number, quick: boolean): Promise<number> {
  const rng = new Rng(seed);
  const a = randomTensor(rng, [rows, ffn], true);
  const b = randomTensor(rng, [rows, ffn], true);
  const g = rng.fillNormal(new Float32Array(rows * ffn));
  const t = await measure(
    () => {
      a.grad = null;
      b.grad = null;
      swiglu(a, b).backward(g);
    },
    quick ? { warmup: 1, minReps: 3, minTimeMs: 0 } : { warmup: 2, minReps: 5, minTimeMs: 500, maxReps: 50 },
  );
  return t.medianMs;
}

async function runCase(c: MoECase, be: TimedBackend, threads: number, opts: SuiteOptions): Promise<Row> {
  const layer = new MoELayer({ dModel: D_MODEL, numExperts: c.E, topK: c.k, experts: { type: 'swiglu', dFF: c.ffn }, router: { type: 'topk' } }, new Rng(opts.seed));
  const rng = new Rng(opts.seed + 1);
  const x = randomTensor(rng, [TOKENS, D_MODEL], true);
  const gy = rng.fillNormal(new Float32Array(TOKENS * D_MODEL));
  const ctx: RouterContext = { training: true, step: 0, rng: new Rng(opts.seed + 2) };
  const samples: { total: number; grouped: number; matmul: number }[] = [];
  const step = () => {
    layer.zeroGrad();
    x.grad = null;
    be.reset();
    const t0 = performance.now();
    const { y } = layer.forward(x, ctx);
    y.backward(gy);
    const total = performance.now() - t0;
    samples.push({ total, grouped: be.groupedMs, matmul: be.matmulMs });
    layer.afterStep();
  };
  const t = await measure(step, measureOptions(opts.quick));
  // the sample closest to the median step time gives a consistent breakdown
  const timed = samples.slice(samples.length - t.reps);
  const med = timed.reduce((best, s) => (Math.abs(s.total - t.medianMs) < Math.abs(best.total - t.medianMs) ? s : best));
  const act = await activationMs(TOKENS * c.k, c.ffn, opts.seed + 3, opts.quick);
  const outside = (med.total - med.grouped) / med.total;
  const rpc = Math.max(0, med.total - med.grouped - act) / med.total;
  const tokensPerS = TOKENS / (t.medianMs / 1000);
  const target = TARGETS[be.name]?.[c.id];
  const fails: string[] = [];
  if (target !== undefined && tokensPerS < target) fails.push(`< ${target} tok/s`);
  if (rpc >= MAX_OVERHEAD_SHARE) fails.push(`overhead >= ${MAX_OVERHEAD_SHARE * 100}%`);
  // 3 GEMMs of 2*d*f flops per assignment forward, twice that backward
  const flops = 3 * 3 * 2 * D_MODEL * c.ffn * TOKENS * c.k;
  return {
    case: c.id,
    impl: be.name,
    threads,
    status: target === undefined ? 'ok' : fails.length === 0 ? 'ok' : 'below target',
    tokensPerS: Math.round(tokensPerS),
    target: target ?? null,
    medianMs: t.medianMs,
    gemmGflops: flops / (med.grouped * 1e6),
    outsideGemmPct: 100 * outside,
    activationPct: (100 * act) / med.total,
    overheadPct: 100 * rpc,
    note: fails.join('; ') || undefined,
  };
}

export const columns: Column[] = [
  { key: 'case', header: 'case' },
  { key: 'impl', header: 'impl' },
  { key: 'threads', header: 'thr' },
  { key: 'status', header: 'status' },
  { key: 'tokensPerS', header: 'tok/s' },
  { key: 'target', header: 'target' },
  { key: 'medianMs', header: 'ms/step' },
  { key: 'gemmGflops', header: 'GEMM GFLOP/s' },
  { key: 'outsideGemmPct', header: 'outside GEMM %' },
  { key: 'activationPct', header: 'act %' },
  { key: 'overheadPct', header: 'route+perm+comb %' },
  { key: 'note', header: 'note' },
];

export async function run(opts: SuiteOptions): Promise<Row[]> {
  const rows: Row[] = [];
  const prev = getBackend();
  try {
    for (const bname of opts.backends) {
      if (bname === 'js') {
        // ~75 GFLOP per step at ~2.5 GFLOP/s: half a minute per step on the reference kernels
        for (const c of CASES) rows.push({ case: c.id, impl: 'js', threads: 1, status: 'skipped', note: 'js reference: too slow (~30 s per step)' });
        continue;
      }
      for (const threads of opts.threads) {
        let inner: Backend;
        try {
          inner = await createBackend(bname as BackendName, { threads });
        } catch (e) {
          opts.log(`[moe] ${bname}: unavailable: ${(e as Error).message.split('\n')[0]}`);
          for (const c of CASES) rows.push({ case: c.id, impl: bname, threads, status: 'unavailable', note: (e as Error).message.split('\n')[0] });
          break;
        }
        const be = new TimedBackend(inner);
        setBackend(be);
        try {
          for (const c of CASES) {
            opts.log(`[moe] ${bname} threads=${threads} ${c.id}`);
            const row = await runCase(c, be, threads, opts);
            opts.log(
              `  ${row.tokensPerS} tok/s, ${(row.medianMs as number).toFixed(0)} ms/step, outside GEMM ${(row.outsideGemmPct as number).toFixed(1)}% (activation ${(row.activationPct as number).toFixed(1)}%, routing+permute+combine ${(row.overheadPct as number).toFixed(1)}%)`,
            );
            rows.push(row);
          }
        } finally {
          setBackend(prev);
          be.dispose();
        }
      }
    }
  } finally {
    setBackend(prev);
  }
  return rows;
}

export function report(rows: Row[]): SuiteTable[] {
  const measured = rows.filter((r) => typeof r.tokensPerS === 'number');
  const best = new Map<string, Row>();
  for (const r of measured) {
    const key = `${r.impl} ${r.case}`;
    const b = best.get(key);
    if (!b || (r.tokensPerS as number) > (b.tokensPerS as number)) best.set(key, r);
  }
  return [
    {
      title: 'best thread count per backend and case vs target',
      columns: [
        { key: 'impl', header: 'impl' },
        { key: 'case', header: 'case' },
        { key: 'threads', header: 'thr' },
        { key: 'tokensPerS', header: 'tok/s' },
        { key: 'target', header: 'target' },
        { key: 'ofTarget', header: '% of target' },
        { key: 'overheadPct', header: 'route+perm+comb %' },
      ],
      rows: [...best.values()].map((r) => ({
        impl: r.impl,
        case: r.case,
        threads: r.threads,
        tokensPerS: r.tokensPerS,
        target: r.target,
        ofTarget: typeof r.target === 'number' ? (100 * (r.tokensPerS as number)) / r.target : null,
        overheadPct: r.overheadPct,
      })),
    },
  ];
}
