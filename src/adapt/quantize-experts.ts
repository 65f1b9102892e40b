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
import { quantizedLoss } from '../infer/quality.js';
import { DecodeEngine } from '../infer/decode.js';
import type { QuantFormat, QuantKernels } from '../kernels/quant.js';
import { ternaryStats } from '../kernels/ternary.js';
import { ADAPT_DOMAINS, loadAnyModel, writeAdaptReport, type AdaptReport, type ModelMeasure } from './common.js';

/** Expert weight format of each --bits value: moe-ts q2_m / q3_m below 4 bits, ggml q4_0 / q8_0 above. */
export const EXPERT_BITS: Readonly<Record<number, QuantFormat>> = { 2: 'q2_m', 3: 'q3_m', 4: 'q4_0', 8: 'q8_0', 32: 'f32' };

/** One --bits value, a number of EXPERT_BITS, `ternary` (tq_e), or `ternary:Z` (tq_e with at least a fraction Z of zeros per row). */
export type ExpertBits = number | string;

/** Format and quantiser option of one --bits value; a one-line error for anything else. */
export function parseExpertBits(b: ExpertBits): { format: QuantFormat; minZeros?: number } {
  if (typeof b === 'number' || /^\d+$/.test(b)) {
    const x = Number(b);
    if (!(x in EXPERT_BITS) || x === 32) throw new ConfigError(`quantize: --bits must be among 2, 3, 4, 8, ternary, ternary:Z (Z in [0, 1)), got ${JSON.stringify(b)}`);
    return { format: EXPERT_BITS[x] };
  }
  const m = /^ternary(?::(\d*\.?\d+))?$/.exec(b);
  const z = m?.[1] === undefined ? 0 : Number(m[1]);
  if (!m || !(z >= 0 && z < 1)) throw new ConfigError(`quantize: --bits must be among 2, 3, 4, 8, ternary, ternary:Z (Z in [0, 1)), got ${JSON.stringify(b)}`);
  return m[1] === undefined ? { format: 'tq_e' } : { format: 'tq_e', minZeros: z };
}

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
  const settings: ExpertBits[] = [32, ...o.bits.map((b) => (typeof b === 'string' && /^\d+$/.test(b) ? Number(b) : b)).filter((b, i, a) => a.indexOf(b) === i)];
  const rows: ModelMeasure[] = [];
  const table: ExpertQuantRow[] = [];
  for (const bits of settings) {
    const { format, minZeros } = bits === 32 ? { format: 'f32' as const, minZeros: undefined } : parseExpertBits(bits);
    const qo = minZeros !== undefined ? { expertQuantOptions: { minZeros } } : {};
    const t0 = performance.now();
    const per = texts.map((t) => ({
      domain: t.domain,
      r: quantizedLoss(model, tokenizer, t.text, { quants: [format], expertsOnly: true, rest, maxTokens: o.tokens ?? 2048, ...(o.kernels ? { kernels: o.kernels } : {}), ...qo })[0],
    }));
    const secs = (performance.now() - t0) / 1000;
    const tokens = per.reduce((s, p) => s + p.r.tokens, 0);
    const r0 = per[0].r;
    rows.push({
      label:
        bits === 32
          ? `experts f32, rest ${rest}`
          : format === 'tq_e'
            ? `experts ternary (tq_e${minZeros !== undefined ? `, >= ${minZeros} zeros` : ''}), rest ${rest}`
            : `experts ${bits}-bit (${format}), rest ${rest}`,
      loss: per.reduce((s, p) => s + p.r.loss * p.r.tokens, 0) / tokens,
      domains: per.map((p) => ({ domain: p.domain, loss: p.r.loss, tokens: p.r.tokens })),
      params: model.numParameters(),
      activeParams: model.activeParameters(),
      tokensPerSec: tokens / Math.max(secs, 1e-9),
    });
    const row: ExpertQuantRow = { bits, format, expertBytes: r0.expertBytes, totalBytes: r0.weightBytes, bitsPerWeight: (8 * r0.expertBytes) / probe.expertParams };
    if (format === 'tq_e') row.ternary = ternaryExpertStats(new DecodeEngine(model, { capacity: 1, quant: rest, expertQuant: 'tq_e', ...qo }).ternaryExperts);
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
