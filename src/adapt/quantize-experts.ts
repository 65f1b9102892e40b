/**
 * `moe-ts quantize RUN --experts-only`: low-bit experts (Mixture of Quantized Experts (MoQE):
 * Complementary Effect of Low-bit Quantization and Robustness, 2023): the routed FFN experts in
 * 2, 3, 4 or 8 bits while attention, embeddings, dense FFNs and the LM head stay f32 (or q8_0),
 * with the loss per domain of each setting on the validation text of the fast decode path.
 * `ternary` adds QMoE's format (QMoE: Practical Sub-1-Bit Compression of Trillion-Parameter Models,
 * 2023): ternary experts, entropy-coded (tq_e, src/kernels/ternary.ts), decoded on the fly.
 */
import { ConfigError } from '../models/config.js';
import { loadCorpusSplits } from '../data/corpus.js';
import { engineTextLoss } from '../infer/quality.js';
import { DecodeEngine, expertRows } from '../infer/decode.js';
import type { QuantFormat, QuantKernels, QuantMatrix } from '../kernels/quant.js';
import { ternaryStats, gptqTernary, encodeTrits } from '../kernels/ternary.js';
import { FFNExperts } from '../moe/experts/ffn.js';
import type { MoETransformerLM } from '../models/transformer.js';
import type { Tokenizer } from '../data/tokenizer/index.js';
import { ADAPT_DOMAINS, loadAnyModel, writeAdaptReport, type AdaptReport, type ModelMeasure } from './common.js';

/** Expert weight format of each --bits value: moe-ts q2_m / q3_m below 4 bits, ggml q4_0 / q8_0 above. */
export const EXPERT_BITS: Readonly<Record<number, QuantFormat>> = { 2: 'q2_m', 3: 'q3_m', 4: 'q4_0', 8: 'q8_0', 32: 'f32' };

/** One --bits value, a number of EXPERT_BITS, `ternary` (tq_e), or `ternary:Z` (tq_e with at least a fraction Z of zeros per row). */
export type ExpertBits = number | string;

/** Format and quantiser option of one --bits value; a one-line error for anything else. */
export function parseExpertBits(b: ExpertBits): { format: QuantFormat; minZeros?: number; gptq?: boolean } {
  if (typeof b === 'number' || /^\d+$/.test(b)) {
    const x = Number(b);
    if (!(x in EXPERT_BITS) || x === 32) throw new ConfigError(`quantize: --bits must be among ${BITS_RULE}, got ${JSON.stringify(b)}`);
    return { format: EXPERT_BITS[x] };
  }
  const m = /^ternary(-gptq)?(?::(\d*\.?\d+))?$/.exec(b);
  const z = m?.[2] === undefined ? 0 : Number(m[2]);
  if (!m || !(z >= 0 && z < 1)) throw new ConfigError(`quantize: --bits must be among ${BITS_RULE}, got ${JSON.stringify(b)}`);
  return { format: 'tq_e', ...(m[2] === undefined ? {} : { minZeros: z }), ...(m[1] ? { gptq: true } : {}) };
}
const BITS_RULE = '2, 3, 4, 8, ternary, ternary:Z, ternary-gptq, ternary-gptq:Z (Z in [0, 1))';

/** Trit counts and entropy of the tq_e experts of one row. */
export interface TernaryExpertStats {
  /** Fractions of the expert weights that are 0, +s, -s. */
  zeroFraction: number;
  plusFraction: number;
  minusFraction: number;
  /** Zeroth-order entropy of the trits, bits per weight (the bound for coding trits one at a time, independently). */
  entropy: number;
  /** Bits per weight of the Huffman streams alone, and of the f16 row scales, code tables and headers. */
  streamBitsPerWeight: number;
  overheadBitsPerWeight: number;
  /** How many matrices picked each tuple size (trits per Huffman symbol), index 1..5. */
  tuples: number[];
}

/** One row of the low-bit experts table. */
export interface ExpertQuantRow {
  /** The --bits value (32 for the f32 row). */
  bits: ExpertBits;
  format: QuantFormat;
  /** Bytes of the routed experts' weights, and of every weight the fast path holds. */
  expertBytes: number;
  totalBytes: number;
  /** Stored bits per expert weight (scales and minima included; tq_e: the compressed bytes with scales, code tables and headers). */
  bitsPerWeight: number;
  /** tq_e rows only. */
  ternary?: TernaryExpertStats;
}

/** Loss per domain with the experts in each of `bits` (32 = the f32 reference row, always first). */
export function runQuantizeExperts(o: {
  model: string;
  bits: ExpertBits[];
  /** Format of every non-expert weight: f32 (default) or q8_0. */
  rest?: QuantFormat;
  sources?: string[];
  /** Validation tokens scored per domain. */
  tokens?: number;
  /** ternary-gptq: training tokens per domain whose expert inputs make GPTQ's X^T X (default 2048). */
  calibration?: number;
  dataDir?: string;
  kernels?: QuantKernels;
  /** Directory for quantize-experts.md / .json (none: no files). */
  out?: string;
}): AdaptReport & { table: ExpertQuantRow[]; files?: { md: string; json: string } } {
  const rest = o.rest ?? 'f32';
  if (rest !== 'f32' && rest !== 'q8_0') throw new ConfigError(`quantize: --rest must be f32 or q8_0, got ${JSON.stringify(rest)}`);
  for (const b of o.bits) parseExpertBits(b);
  const src = loadAnyModel(o.model);
  const { model, tokenizer } = src;
  if (model.config.num_local_experts === 0) throw new ConfigError(`quantize --experts-only: ${o.model} is a dense model (no experts)`);
  const why = DecodeEngine.unsupported(model);
  if (why) throw new ConfigError(`quantize --experts-only: the fast path does not run this model (${why})`);
  const probe = new DecodeEngine(model, { capacity: 1 });
  if (probe.expertParams === 0)
    throw new ConfigError('quantize --experts-only: no MoE layer has routed FFN experts on the fast path (dropless dispatch, sparse router), so there is nothing to quantise');
  const sources = o.sources ?? ADAPT_DOMAINS;
  const texts = sources.map((s) => {
    const c = loadCorpusSplits(s, { dataDir: o.dataDir });
    // the held-out part: the validation file, else the tail the trainer holds out (10%)
    return { domain: s, text: c.valid ?? c.train.slice(Math.floor(c.train.length * 0.9)) };
  });
  let calib: Map<string, Float64Array> | null = null;
  const settings: ExpertBits[] = [32, ...o.bits.map((b) => (typeof b === 'string' && /^\d+$/.test(b) ? Number(b) : b)).filter((b, i, a) => a.indexOf(b) === i)];
  const rows: ModelMeasure[] = [];
  const table: ExpertQuantRow[] = [];
  for (const bits of settings) {
    const { format, minZeros, gptq } = bits === 32 ? { format: 'f32' as const, minZeros: undefined, gptq: false } : parseExpertBits(bits);
    let qo: { expertQuantOptions?: { minZeros: number }; expertWeights?: (l: number, e: number, w: 'w1' | 'w2' | 'w3') => QuantMatrix | null } =
      minZeros !== undefined ? { expertQuantOptions: { minZeros } } : {};
    if (gptq) {
      calib ??= expertGram(model, tokenizer, sources, { rest, tokens: o.calibration ?? 2048, dataDir: o.dataDir });
      qo = { expertWeights: gptqExperts(model, calib, minZeros ?? 0) };
    }
    const t0 = performance.now();
    // one engine per setting, scored on every domain (tq_e compiles: quantising and entropy coding every expert)
    const eng = new DecodeEngine(model, { quant: rest, expertQuant: format, capacity: Math.min(128, model.config.max_position_embeddings), ...(o.kernels ? { kernels: o.kernels } : {}), ...qo });
    const per = texts.map((t) => ({ domain: t.domain, r: engineTextLoss(eng, tokenizer, t.text, { maxTokens: o.tokens ?? 2048 }) }));
    const secs = (performance.now() - t0) / 1000;
    const tokens = per.reduce((s, p) => s + p.r.tokens, 0);
    rows.push({
      label:
        bits === 32
          ? `experts f32, rest ${rest}`
          : format === 'tq_e'
            ? `experts ternary (tq_e${gptq ? ', GPTQ' : ''}${minZeros !== undefined ? `, >= ${minZeros} zeros` : ''}), rest ${rest}`
            : `experts ${bits}-bit (${format}), rest ${rest}`,
      loss: per.reduce((s, p) => s + p.r.loss * p.r.tokens, 0) / tokens,
      domains: per.map((p) => ({ domain: p.domain, loss: p.r.loss, tokens: p.r.tokens })),
      params: model.numParameters(),
      activeParams: model.activeParameters(),
      tokensPerSec: tokens / Math.max(secs, 1e-9),
    });
    const row: ExpertQuantRow = { bits, format, expertBytes: eng.expertBytes, totalBytes: eng.weightBytes, bitsPerWeight: (8 * eng.expertBytes) / probe.expertParams };
    if (format === 'tq_e') row.ternary = ternaryExpertStats(eng.ternaryExperts);
    table.push(row);
  }
  const report: AdaptReport = {
    command: 'quantize --experts-only',
    summary: `Low-bit experts (MoQE, 2023; ternary: QMoE, 2023): the routed FFN experts in each format, every other weight in ${rest}; loss of the fast decode path on the validation text of ${sources.join(', ')} (up to ${o.tokens ?? 2048} tokens each).`,
    rows,
    columns: [
      { head: 'bits/expert weight', values: table.map((t) => t.bitsPerWeight.toFixed(2)) },
      { head: 'expert bytes', values: table.map((t) => t.expertBytes.toLocaleString('en-US')) },
      { head: 'total bytes', values: table.map((t) => t.totalBytes.toLocaleString('en-US')) },
      ...(table.some((t) => t.ternary)
        ? [
            { head: 'zeros', values: table.map((t) => (t.ternary ? `${(100 * t.ternary.zeroFraction).toFixed(1)}%` : '-')) },
            { head: 'trit entropy (bits)', values: table.map((t) => (t.ternary ? t.ternary.entropy.toFixed(3) : '-')) },
          ]
        : []),
    ],
    table,
  };
  return { ...report, table, ...(o.out ? { files: writeAdaptReport(o.out, 'quantize-experts', report) } : {}) };
}

/** Zero fraction, entropy and bit split of tq_e expert streams. */
export function ternaryExpertStats(streams: readonly Uint8Array[]): TernaryExpertStats {
  let z = 0;
  let p = 0;
  let m = 0;
  let stream = 0;
  let bytes = 0;
  const tuples = [0, 0, 0, 0, 0, 0];
  for (const s of streams) {
    const t = ternaryStats(s);
    z += t.zeros;
    p += t.plus;
    m += t.minus;
    stream += t.streamBytes;
    bytes += t.bytes;
    tuples[t.tuple]++;
  }
  const n = z + p + m;
  const h = (c: number): number => (c > 0 ? -(c / n) * Math.log2(c / n) : 0);
  return {
    zeroFraction: z / n,
    plusFraction: p / n,
    minusFraction: m / n,
    entropy: h(z) + h(p) + h(m),
    streamBitsPerWeight: (8 * stream) / n,
    overheadBitsPerWeight: (8 * (bytes - stream)) / n,
    tuples,
  };
}

/**
 * X^T X of every routed expert's inputs on calibration text (the head of each domain's training
 * split, never the validation text): key `layer.expert.in` [d, d] for w1/w3 and `.mid` [dFF, dFF]
 * for w2, all from the unquantised experts in one pass (QMoE instead quantises layer by layer).
 */
export function expertGram(model: MoETransformerLM, tokenizer: Tokenizer, sources: string[], o: { rest?: QuantFormat; tokens: number; dataDir?: string }): Map<string, Float64Array> {
  const grams = new Map<string, Float64Array>();
  const add = (key: string, x: Float32Array, m: number, n: number): void => {
    let g = grams.get(key);
    if (!g) grams.set(key, (g = new Float64Array(n * n)));
    for (let t = 0; t < m; t++) {
      const o = t * n;
      for (let i = 0; i < n; i++) {
        const xi = x[o + i];
        if (xi === 0) continue;
        for (let j = 0; j < n; j++) g[i * n + j] += xi * x[o + j];
      }
    }
  };
  const W = Math.min(128, model.config.max_position_embeddings);
  const eng = new DecodeEngine(model, {
    quant: o.rest ?? 'f32',
    capacity: W,
    onExpertInputs: (l, e, x, h, m) => {
      add(`${l}.${e}.in`, x, m, x.length / m);
      add(`${l}.${e}.mid`, h, m, h.length / m);
    },
  });
  for (const s of sources) {
    const ids = tokenizer.encode(loadCorpusSplits(s, { dataDir: o.dataDir }).train.slice(0, 16 * o.tokens)).subarray(0, o.tokens);
    for (let p = 0; p < ids.length; p += W) {
      eng.reset();
      eng.forward(ids.subarray(p, Math.min(p + W, ids.length)));
    }
  }
  return grams;
}

/** GPTQ-rounded tq_e streams of every routed expert (an expertWeights source for DecodeEngine). */
function gptqExperts(model: MoETransformerLM, grams: Map<string, Float64Array>, minZeros: number): (l: number, e: number, w: 'w1' | 'w2' | 'w3') => QuantMatrix | null {
  const out = new Map<string, QuantMatrix>();
  for (const layer of model.layers) {
    const ex = layer.block_sparse_moe?.experts;
    if (!(ex instanceof FFNExperts)) continue;
    const d = ex.dModel;
    const f = ex.dFF;
    for (let e = 0; e < ex.numExperts; e++) {
      const o = e * d * f;
      for (const [which, t, rows, cols, key] of [
        ['w1', ex.w1, f, d, 'in'],
        ['w3', ex.w3, f, d, 'in'],
        ['w2', ex.w2, d, f, 'mid'],
      ] as const) {
        if (!t) continue;
        // an expert no calibration token reached: X^T X = 0, plain least-squares ternary (GPTQ with H = I)
        const h = grams.get(`${layer.index}.${e}.${key}`) ?? Float64Array.from({ length: cols * cols }, (_, i) => (i % (cols + 1) === 0 ? 1 : 0));
        const w = which === 'w2' ? expertRows(t.data, o, f, d) : expertRows(t.data, o, d, f);
        out.set(`${layer.index}.${e}.${which}`, { format: 'tq_e', rows, cols, data: encodeTrits(gptqTernary(w, rows, cols, h, { minZeros })) });
      }
    }
  }
  return (l, e, w) => out.get(`${l}.${e}.${w}`) ?? null;
}
