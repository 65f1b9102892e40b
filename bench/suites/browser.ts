/**
 * The wasm backend inside Chromium vs the same backend in Node: training tokens/s of one small
 * MoE at the same thread count, runs alternating between the two so machine load hits both
 * alike. The page is cross-origin isolated (threads). Prints chromium / node per thread count
 * (the goal is >= 0.8). Needs Debian's chromium (or $MOE_CHROMIUM) and a built dist/.
 */
import * as fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { createWasmBackend, wasmUsesRelaxedSimd } from '../../src/kernels/wasm/index.js';
import { setBackend, getBackend } from '../../src/tensor/backend.js';
import { JsBackend } from '../../src/kernels/js.js';
import { parseRunConfig } from '../../src/models/config.js';
import { TrainSession } from '../../src/train/session.js';
import { CHROMIUM_ARGS, chromiumPath, repoRoot, serveDist } from '../../test/browser/helpers.js';
import type { Column, Row, SuiteOptions, SuiteTable } from '../lib/suite.js';

export const name = 'browser';
export const description = 'training tokens/s of the wasm backend in Chromium (Web Workers) vs Node (worker_threads), same model and threads';

export const columns: Column[] = [
  { key: 'impl', header: 'engine' },
  { key: 'threads', header: 'thr' },
  { key: 'tokensPerS', header: 'tok/s (median)' },
  { key: 'runs', header: 'runs (tok/s)' },
  { key: 'note', header: 'note' },
];

const CONFIG = {
  model: { hidden_size: 128, num_hidden_layers: 2, num_attention_heads: 4, num_local_experts: 8, num_experts_per_tok: 2, moe_intermediate_size: 256 },
  training: { steps: 1000, batch_size: 8, seq_len: 64, seed: 1234 },
  data: { sources: ['shakespeare'] },
};

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

async function nodeRun(threads: number, text: string, warmup: number, steps: number): Promise<number> {
  const prev = getBackend();
  const be = await createWasmBackend({ threads });
  setBackend(be);
  try {
    const s = new TrainSession(parseRunConfig(CONFIG), [text]);
    for (let i = 0; i < warmup; i++) s.trainStep();
    const t0 = performance.now();
    for (let i = 0; i < steps; i++) s.trainStep();
    return (steps * CONFIG.training.batch_size * CONFIG.training.seq_len) / ((performance.now() - t0) / 1000);
  } finally {
    be.dispose();
    setBackend(prev.name === 'js' ? prev : new JsBackend());
  }
}

export async function run(opts: SuiteOptions): Promise<Row[]> {
  const exe = chromiumPath();
  if (!exe) {
    // a missing browser is a row, not a failed bench run
    opts.log("browser: chromium not found (install Debian's chromium or set MOE_CHROMIUM); skipped");
    return [{ impl: 'chromium', threads: '-', tokensPerS: '-', runs: '-', note: 'skipped: chromium not found' }];
  }
  const warmup = opts.quick ? 1 : 2;
  const steps = opts.quick ? 3 : 8;
  const rounds = opts.quick ? 1 : 3;
  const text = fs.readFileSync(path.join(repoRoot, 'data', 'shakespeare.txt'), 'utf8');
  const server = await serveDist(true);
  const browser = await chromium.launch({ executablePath: exe, args: CHROMIUM_ARGS });
  const rows: Row[] = [];
  try {
    const page = await browser.newPage();
    await page.goto(server.url + 'playground/style.css');
    const browserRun = async (threads: number): Promise<{ tokensPerSec: number; relaxed: boolean }> => {
      const r = (await page.evaluate(
        (job) =>
          new Promise<unknown>((resolve) => {
            const G = globalThis as unknown as { Worker: new (u: string, o: object) => { onmessage: (e: { data: unknown }) => void; postMessage(m: unknown): void; terminate(): void } };
            const w = new G.Worker('/bench/lib/browser-train-worker.js', { type: 'module' });
            w.onmessage = (e) => {
              resolve(e.data);
              w.terminate();
            };
            w.postMessage(job);
          }),
        { threads, config: CONFIG, warmup, steps },
      )) as { tokensPerSec: number; relaxed: boolean; error?: string; threads: number };
      if (r.error) throw new Error(`browser run failed: ${r.error}`);
      if (r.threads !== threads) throw new Error(`browser ran ${r.threads} threads, asked for ${threads}`);
      return r;
    };
    for (const threads of opts.threads) {
      const node: number[] = [];
      const web: number[] = [];
      let relaxed = false;
      for (let r = 0; r < rounds; r++) {
        opts.log(`browser: round ${r + 1}/${rounds}, ${threads} thread(s): node`);
        node.push(await nodeRun(threads, text, warmup, steps));
        opts.log(`browser: round ${r + 1}/${rounds}, ${threads} thread(s): chromium`);
        const b = await browserRun(threads);
        web.push(b.tokensPerSec);
        relaxed = b.relaxed;
      }
      const fmt = (xs: number[]): string => xs.map((x) => Math.round(x)).join(', ');
      rows.push({ impl: 'node', threads, tokensPerS: Math.round(median(node)), runs: fmt(node), note: wasmUsesRelaxedSimd() ? 'relaxed SIMD' : 'baseline SIMD' });
      rows.push({ impl: 'chromium', threads, tokensPerS: Math.round(median(web)), runs: fmt(web), note: relaxed ? 'relaxed SIMD' : 'baseline SIMD' });
    }
  } finally {
    await browser.close();
    await server.close();
  }
  return rows;
}

export function report(rows: Row[]): SuiteTable[] {
  const out: Row[] = [];
  for (const r of rows.filter((x) => x.impl === 'chromium')) {
    const n = rows.find((x) => x.impl === 'node' && x.threads === r.threads);
    if (!n) continue;
    const ratio = (r.tokensPerS as number) / (n.tokensPerS as number);
    out.push({ threads: r.threads, ratio: Number(ratio.toFixed(2)), goal: ratio >= 0.8 ? 'met (>= 0.8)' : 'NOT met (< 0.8)' });
  }
  return [
    {
      title: 'training tokens/s, chromium / node (same wasm backend and threads)',
      columns: [
        { key: 'threads', header: 'thr' },
        { key: 'ratio', header: 'chromium / node' },
        { key: 'goal', header: 'goal' },
      ],
      rows: out,
    },
  ];
}
