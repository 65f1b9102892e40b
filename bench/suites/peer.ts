/**
 * PEER ("Mixture of A Million Experts", 2024) at pool sizes up to 1,048,576 single-neuron experts:
 * time of one layer's forward, backward and AdamW step (lazy on the touched expert rows) at
 * d=64, T=1024 tokens, 8 heads x top-16, keyDim 128, and the memory it holds (parameters, AdamW
 * moments, process RSS). Product-key retrieval costs O(sqrt(N)) per query and the row-sparse
 * expert gradient O(retrieved rows), so the step time should barely move from 16K to 1M experts
 * while the memory grows with N. Runs on the first backend of --backends that loads (wasm or
 * native; js runs the sub-key GEMMs on the reference kernels), with the first --threads count.
 */
import { performance } from 'node:perf_hooks';
import { createBackend, type BackendName } from '../../src/kernels/index.js';
import { getBackend, setBackend } from '../../src/tensor/backend.js';
import { Tensor } from '../../src/tensor/tensor.js';
import { Rng } from '../../src/tensor/random.js';
import { AdamW } from '../../src/nn/index.js';
import { PEERLayer } from '../../src/models/ffn/index.js';
import type { Column, Row, SuiteOptions } from '../lib/suite.js';

export const name = 'peer';
export const description = 'PEER layer (d=64, T=1024, 8 heads x top-16) forward/backward/AdamW ms and memory at 16K, 262K and 1M experts';

export const D_MODEL = 64;
export const TOKENS = 1024;
export const HEADS = 8;
export const TOP_K = 16;
export const KEY_DIM = 128;
export const POOLS = [16384, 262144, 1048576] as const;

export const columns: Column[] = [
  { key: 'experts', header: 'experts' },
  { key: 'impl', header: 'impl' },
  { key: 'threads', header: 'thr' },
  { key: 'forwardMs', header: 'fwd ms' },
  { key: 'backwardMs', header: 'bwd ms' },
  { key: 'optimizerMs', header: 'AdamW ms' },
  { key: 'tokensPerS', header: 'tok/s (fwd+bwd+opt)' },
  { key: 'touchedRows', header: 'rows touched' },
  { key: 'paramMB', header: 'params MB' },
  { key: 'adamMB', header: 'AdamW MB' },
  { key: 'rssMB', header: 'RSS MB' },
  { key: 'note', header: 'note' },
];

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function runPool(N: number, impl: string, threads: number, opts: SuiteOptions): Promise<Row> {
  const layer = new PEERLayer({ dModel: D_MODEL, numExperts: N, heads: HEADS, topK: TOP_K, keyDim: KEY_DIM, activation: 'gelu' }, new Rng(opts.seed));
  const opt = new AdamW(layer.parameters(), { lr: 1e-3, weightDecay: 0.1 });
  const rng = new Rng(opts.seed + 1);
  const x = new Tensor(rng.fillNormal(new Float32Array(TOKENS * D_MODEL)), [TOKENS, D_MODEL], true);
  const gy = rng.fillNormal(new Float32Array(TOKENS * D_MODEL));
  const fwd: number[] = [];
  const bwd: number[] = [];
  const step: number[] = [];
  let touched = 0;
  const reps = opts.quick ? 2 : 5;
  for (let r = 0; r <= reps; r++) {
    x.grad = null;
    const t0 = performance.now();
    const { y } = layer.forward(x);
    const t1 = performance.now();
    y.backward(gy);
    const t2 = performance.now();
    touched = layer.down.rowGrad?.rows.length ?? 0;
    opt.step();
    opt.zeroGrad();
    const t3 = performance.now();
    // the first step is warm-up (page faults of the moments, JIT)
    if (r === 0) continue;
    fwd.push(t1 - t0);
    bwd.push(t2 - t1);
    step.push(t3 - t2);
  }
  const total = median(fwd) + median(bwd) + median(step);
  const params = layer.numParameters();
  return {
    experts: N,
    impl,
    threads,
    forwardMs: median(fwd),
    backwardMs: median(bwd),
    optimizerMs: median(step),
    tokensPerS: Math.round(TOKENS / (total / 1000)),
    touchedRows: touched,
    paramMB: (4 * params) / 1e6,
    adamMB: (8 * params) / 1e6,
    rssMB: process.memoryUsage().rss / 1e6,
  };
}

export async function run(opts: SuiteOptions): Promise<Row[]> {
  const rows: Row[] = [];
  const prev = getBackend();
  try {
    for (const bname of opts.backends) {
      const threads = opts.threads[0] ?? 1;
      try {
        setBackend(await createBackend(bname as BackendName, { threads }));
      } catch (e) {
        opts.log(`[peer] ${bname}: unavailable: ${(e as Error).message.split('\n')[0]}`);
        continue;
      }
      for (const N of POOLS) {
        opts.log(`[peer] ${bname} threads=${threads} N=${N}`);
        const row = await runPool(N, bname, threads, opts);
        opts.log(
          `  fwd ${(row.forwardMs as number).toFixed(0)} ms, bwd ${(row.backwardMs as number).toFixed(0)} ms, AdamW ${(row.optimizerMs as number).toFixed(0)} ms, RSS ${(row.rssMB as number).toFixed(0)} MB`,
        );
        rows.push(row);
      }
      break;
    }
  } finally {
    setBackend(prev);
  }
  return rows;
}
