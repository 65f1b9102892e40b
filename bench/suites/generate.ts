/**
 * Generation speed, moe-ts's fast decode path vs llama.cpp (node-llama-cpp) on the same GGUF
 * files, in the same run: prompt tokens/s (64-token prompt, one batch) and decode tokens/s
 * (greedy, one token per step) for f32 / q8_0 / q4_0, at 1 and 2 threads for llama.cpp (moe-ts's
 * fast path is single-threaded). Shapes: the default model config, and one realistic MoE layer
 * (64 experts, top-8, d 1024, expert width 512, 16 heads of 64, Mixtral-style attention; a
 * Qwen3-style GQA + qk-norm shape is a candidate now that the exporter maps qwen3moe) with random weights.
 * Each moe-ts row is also given as a ratio to llama.cpp's better thread count on the same file
 * and format. The load average is recorded with every row: rows measured on a busy machine
 * compare badly with each other, but the ratios within one row pair are measured back to back.
 */
import * as os from 'node:os';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { MoETransformerLM } from '../../src/models/transformer.js';
import { parseModelConfig } from '../../src/models/config.js';
import { ByteTokenizer } from '../../src/data/tokenizer/index.js';
import { exportGGUF, fromGGUF } from '../../src/io/gguf/index.js';
import { DecodeEngine } from '../../src/infer/decode.js';
import { WasmQuantKernels } from '../../src/kernels/wasm/quant.js';
import { argmax } from '../../src/infer/sampling.js';
import { initBackend, disposeBackend } from '../../src/kernels/index.js';
import { openGGUFEngine, offloadHitRate, type GGUFEngine } from '../../src/infer/offload.js';
import { writeSynthGGUF, SYNTH_SHAPES } from '../../src/io/gguf/synth.js';
import type { Column, Row, SuiteOptions, SuiteTable } from '../lib/suite.js';

export const name = 'generate';
export const description = 'prompt and decode tokens/s: moe-ts fast path vs llama.cpp on the same GGUF files (f32/q8_0/q4_0, 1 and 2 threads)';

export const columns: Column[] = [
  { key: 'case', header: 'case' },
  { key: 'quant', header: 'quant' },
  { key: 'impl', header: 'impl' },
  { key: 'threads', header: 'thr' },
  { key: 'promptTps', header: 'prompt tok/s' },
  { key: 'decodeTps', header: 'decode tok/s' },
  { key: 'promptRatio', header: 'prompt ×llama' },
  { key: 'decodeRatio', header: 'decode ×llama' },
  { key: 'rssMB', header: 'rss MB' },
  { key: 'peakMB', header: 'peak MB' },
  { key: 'load', header: 'load' },
  { key: 'note', header: 'note' },
];

interface Case {
  id: string;
  model: Record<string, unknown>;
  quants: ('f32' | 'q8_0' | 'q4_0')[];
}

export const CASES: readonly Case[] = [
  { id: 'default', model: {}, quants: ['f32', 'q8_0', 'q4_0'] },
  {
    id: 'moe-64x8',
    model: {
      hidden_size: 1024,
      num_hidden_layers: 1,
      num_attention_heads: 16,
      num_local_experts: 64,
      num_experts_per_tok: 8,
      moe_intermediate_size: 512,
      max_position_embeddings: 256,
    },
    quants: ['q8_0', 'q4_0'],
  },
];

const PROMPT = 64;

/** The synthetic real-size shapes (moe-ts synth), each at q8_0 and q4_0, in memory, offloaded at 25% of the file, and in llama.cpp. */
export const SYNTH_CASES: readonly { shape: keyof typeof SYNTH_SHAPES; layers: number }[] = [
  { shape: 'olmoe-1b-7b', layers: 4 },
  { shape: 'qwen3-30b-a3b', layers: 2 },
];
/** Offloading budget as a fraction of the model file. */
export const OFFLOAD_FRACTION = 0.25;
/**
 * The decode trace of the offloading rows (and of their in-memory reference): the tokens of
 * "the " repeated, fed instead of sampled ones, so the routing repeats with the text's period
 * (up to the attention context's drift), as it does on repetitive text.
 */
export const REPEAT_TRACE = Array.from(new TextEncoder().encode('the '));

function peakMB(): number {
  return Math.round(process.resourceUsage().maxRSS / 1024);
}

export async function run(opts: SuiteOptions): Promise<Row[]> {
  const decodeN = opts.quick ? 32 : 128;
  const threads = opts.threads.length ? opts.threads : [1, 2];
  const { getLlama, LlamaLogLevel } = await import('node-llama-cpp');
  const llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'moe-ts-bench-gen-'));
  const rows: Row[] = [];
  const only = process.env.BENCH_GENERATE_CASES?.split(',');
  const cases = (opts.quick ? CASES.slice(0, 1) : CASES).filter((c) => !only || only.includes(c.id));
  // the routers' gate products run on the tensor backend, as in the CLI (not on the js reference); 1 thread like the fast path
  await initBackend(opts.backends[0] ?? 'auto', { threads: 1 });
  try {
    if (!opts.quick) {
      for (const sc of SYNTH_CASES) {
        if (only && !only.includes(sc.shape)) continue;
        for (const quant of ['q8_0', 'q4_0'] as const) rows.push(...(await runSynth(sc.shape, sc.layers, quant, dir, decodeN, threads, llama, opts)));
      }
    }
    for (const c of cases) {
      opts.log(`generate: building ${c.id}`);
      const src = new MoETransformerLM(parseModelConfig(c.model), opts.seed).eval();
      const tok = new ByteTokenizer();
      const prompt = Int32Array.from({ length: PROMPT }, (_, i) => 32 + ((i * 7) % 90));
      for (const quant of c.quants) {
        const file = path.join(dir, `${c.id}-${quant}.gguf`);
        exportGGUF(src, tok, file, { quant });
        // moe-ts: the model the file decodes to, compiled to the fast path in the file's format
        const g = fromGGUF(file);
        const eng = new DecodeEngine(g.model, { quant, kernels: new WasmQuantKernels(), capacity: PROMPT + decodeN + 1 });
        const ours = timeOurs(eng, prompt, decodeN);
        const ourRow: Row = { case: c.id, quant, impl: 'moe-ts', threads: 1, ...ours, rssMB: Math.round(process.memoryUsage().rss / 2 ** 20), peakMB: peakMB(), load: os.loadavg()[0].toFixed(1) };
        opts.log(`generate: ${c.id} ${quant} moe-ts prompt ${ours.promptTps.toFixed(0)} decode ${ours.decodeTps.toFixed(0)} tok/s`);
        const theirs: Row[] = [];
        const lm = await llama.loadModel({ modelPath: file });
        try {
          for (const t of threads) {
            const r = await timeLlama(lm, Array.from(prompt), decodeN, t);
            theirs.push({ case: c.id, quant, impl: 'llama.cpp', threads: t, ...r, rssMB: Math.round(process.memoryUsage().rss / 2 ** 20), peakMB: peakMB(), load: os.loadavg()[0].toFixed(1) });
            opts.log(`generate: ${c.id} ${quant} llama.cpp ${t} thr prompt ${r.promptTps.toFixed(0)} decode ${r.decodeTps.toFixed(0)} tok/s`);
          }
        } finally {
          await lm.dispose();
        }
        const bestP = Math.max(...theirs.map((r) => r.promptTps as number));
        const bestD = Math.max(...theirs.map((r) => r.decodeTps as number));
        ourRow.promptRatio = (ourRow.promptTps as number) / bestP;
        ourRow.decodeRatio = (ourRow.decodeTps as number) / bestD;
        ourRow.note = 'wasm SIMD, 1 thread; ratio vs llama.cpp best thread count';
        rows.push(ourRow, ...theirs);
        fs.rmSync(file, { force: true });
      }
    }
  } finally {
    disposeBackend();
    await llama.dispose();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return rows;
}

type Llama = Awaited<ReturnType<typeof import('node-llama-cpp').getLlama>>;

/** One synthetic shape in one format: moe-ts in memory, moe-ts offloaded, llama.cpp at each thread count; the file is deleted after. */
async function runSynth(shape: keyof typeof SYNTH_SHAPES, layers: number, quant: 'q8_0' | 'q4_0', dir: string, decodeN: number, threads: number[], llama: Llama, opts: SuiteOptions): Promise<Row[]> {
  const id = `${shape} x${layers}L`;
  const file = path.join(dir, `${shape}-${quant}.gguf`);
  opts.log(`generate: writing ${id} ${quant}`);
  const rep = writeSynthGGUF(shape, file, { layers, quant, seed: opts.seed, context: 512 });
  const prompt = Int32Array.from({ length: PROMPT }, (_, i) => 32 + ((i * 7) % 90));
  const cap = PROMPT + decodeN + 1;
  const load = (): string => os.loadavg()[0].toFixed(1);
  const rss = (): number => Math.round(process.memoryUsage().rss / 2 ** 20);
  const rows: Row[] = [];
  try {
    let g: GGUFEngine | null = openGGUFEngine(file, { kernels: new WasmQuantKernels(), capacity: cap });
    const ours = timeOurs(g.engine, prompt, decodeN);
    const firstOurs = greedyIds(g.engine, prompt.subarray(0, 8), 8);
    const memTrace = timeTrace(g, prompt, decodeN);
    const ourRow: Row = { case: id, quant, impl: 'moe-ts', threads: 1, ...ours, rssMB: rss(), peakMB: peakMB(), load: load() };
    opts.log(`generate: ${id} ${quant} moe-ts prompt ${ours.promptTps.toFixed(1)} decode ${ours.decodeTps.toFixed(1)} tok/s (trace ${memTrace.decodeTps.toFixed(1)})`);
    g.close();
    g = null;
    const budget = OFFLOAD_FRACTION * rep.bytes;
    const off = openGGUFEngine(file, { kernels: new WasmQuantKernels(), capacity: cap, maxMemory: budget });
    const offT = timeTrace(off, prompt, decodeN);
    const st = off.experts.getStats();
    off.close();
    const offRow: Row = {
      case: id,
      quant,
      impl: `moe-ts offload ${Math.round(100 * OFFLOAD_FRACTION)}%`,
      threads: 1,
      promptTps: offT.promptTps,
      decodeTps: offT.decodeTps,
      rssMB: rss(),
      peakMB: peakMB(),
      load: load(),
      note:
        `budget ${(budget / 1e6).toFixed(0)} MB of ${(rep.bytes / 1e6).toFixed(0)}: cache ${st.cacheSlots} experts; decode on the "the " trace ${(offT.decodeTps / memTrace.decodeTps).toFixed(2)}x in-memory (${memTrace.decodeTps.toFixed(1)} tok/s); ` +
        `hit rate ${(100 * offloadHitRate(st)).toFixed(1)}% (${st.prefetchHits} prefetched), ${(st.bytesRead / 1e6).toFixed(0)} MB read, stall ${st.stallMs.toFixed(0)} ms`,
    };
    opts.log(`generate: ${id} ${quant} offloaded decode ${offT.decodeTps.toFixed(1)} tok/s, ${offRow.note as string}`);
    const theirs: Row[] = [];
    const lm = await llama.loadModel({ modelPath: file });
    let firstTheirs: number[] = [];
    try {
      firstTheirs = await llamaGreedy(lm, Array.from(prompt.subarray(0, 8)), 8);
      for (const t of threads) {
        const r = await timeLlama(lm, Array.from(prompt), decodeN, t);
        theirs.push({ case: id, quant, impl: 'llama.cpp', threads: t, ...r, rssMB: rss(), peakMB: peakMB(), load: load() });
        opts.log(`generate: ${id} ${quant} llama.cpp ${t} thr prompt ${r.promptTps.toFixed(1)} decode ${r.decodeTps.toFixed(1)} tok/s`);
      }
    } finally {
      await lm.dispose();
    }
    const bestP = Math.max(...theirs.map((r) => r.promptTps as number));
    const bestD = Math.max(...theirs.map((r) => r.decodeTps as number));
    ourRow.promptRatio = (ourRow.promptTps as number) / bestP;
    ourRow.decodeRatio = (ourRow.decodeTps as number) / bestD;
    offRow.promptRatio = (offRow.promptTps as number) / bestP;
    offRow.decodeRatio = (offRow.decodeTps as number) / bestD;
    const same = firstOurs.every((x, i) => x === firstTheirs[i]);
    ourRow.note = `wasm SIMD, 1 thread; ${(rep.bytes / 1e9).toFixed(2)} GB file; first 8 greedy tokens ${same ? 'equal' : 'DIFFER from'} llama.cpp's`;
    rows.push(ourRow, offRow, ...theirs);
  } finally {
    fs.rmSync(file, { force: true });
  }
  return rows;
}

function greedyIds(eng: DecodeEngine, prompt: Int32Array, n: number): number[] {
  eng.reset();
  let l = eng.forward(prompt);
  const ids: number[] = [];
  for (let i = 0; i < n; i++) {
    ids.push(argmax(l.subarray(0, 256)));
    l = eng.forward(Int32Array.of(ids[i]));
  }
  return ids;
}

async function llamaGreedy(m: LlamaModelLike, prompt: number[], n: number): Promise<number[]> {
  const ctx = await m.createContext({ contextSize: 64, batchSize: 64, threads: 1, flashAttention: false });
  try {
    const seq = ctx.getSequence();
    const out: number[] = [];
    for await (const t of seq.evaluate(prompt as never, { temperature: 0 })) {
      out.push(t as number);
      if (out.length >= n) break;
    }
    return out;
  } finally {
    await ctx.dispose();
  }
}

/** Prompt, then decode n steps feeding REPEAT_TRACE (not sampled tokens); the offload counters cover the decode only. */
function timeTrace(g: GGUFEngine, prompt: Int32Array, n: number): { promptTps: number; decodeTps: number } {
  const eng = g.engine;
  eng.reset();
  eng.forward(prompt.subarray(0, 8)); // warm-up
  eng.reset();
  const t0 = performance.now();
  eng.forward(prompt);
  const t1 = performance.now();
  g.experts.resetStats();
  for (let i = 0; i < n; i++) eng.forward(Int32Array.of(REPEAT_TRACE[i % REPEAT_TRACE.length]));
  const t2 = performance.now();
  return { promptTps: prompt.length / ((t1 - t0) / 1000), decodeTps: n / ((t2 - t1) / 1000) };
}

function timeOurs(eng: DecodeEngine, prompt: Int32Array, n: number): { promptTps: number; decodeTps: number } {
  // warm-up: JIT and wasm tiers
  eng.reset();
  eng.forward(prompt.subarray(0, 8));
  eng.forward(Int32Array.of(1));
  eng.reset();
  const t0 = performance.now();
  let logits = eng.forward(prompt);
  const t1 = performance.now();
  for (let i = 0; i < n; i++) logits = eng.forward(Int32Array.of(argmax(logits.subarray(0, 256))));
  const t2 = performance.now();
  return { promptTps: prompt.length / ((t1 - t0) / 1000), decodeTps: n / ((t2 - t1) / 1000) };
}

type LlamaModelLike = Awaited<ReturnType<Awaited<ReturnType<typeof import('node-llama-cpp').getLlama>>['loadModel']>>;

async function timeLlama(m: LlamaModelLike, prompt: number[], n: number, threads: number): Promise<{ promptTps: number; decodeTps: number }> {
  const ctx = await m.createContext({ contextSize: 256, batchSize: 128, threads, flashAttention: false });
  try {
    const run = async (): Promise<{ promptTps: number; decodeTps: number }> => {
      const seq = ctx.getSequence();
      try {
        const t0 = performance.now();
        let t1 = 0;
        let got = 0;
        // the first token comes after the prompt batch; each later one is one decode step
        for await (const _t of seq.evaluate(prompt as never, { temperature: 0 })) {
          if (got === 0) t1 = performance.now();
          if (++got > n) break;
        }
        const t2 = performance.now();
        return { promptTps: prompt.length / ((t1 - t0) / 1000), decodeTps: n / ((t2 - t1) / 1000) };
      } finally {
        seq.dispose();
      }
    };
    await run(); // warm-up
    return await run();
  } finally {
    await ctx.dispose();
  }
}

export function report(rows: Row[]): SuiteTable[] {
  return [{ title: 'generate: moe-ts fast path vs llama.cpp (same GGUF file per row pair)', columns, rows }];
}
