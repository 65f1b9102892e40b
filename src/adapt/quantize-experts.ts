/**
 * `moe-ts quantize RUN --experts-only`: low-bit experts (Mixture of Quantized Experts (MoQE):
 * Complementary Effect of Low-bit Quantization and Robustness, 2023): the routed FFN experts in
 * 2, 3, 4 or 8 bits while attention, embeddings, dense FFNs and the LM head stay f32 (or q8_0),
 * with the loss per domain of each setting on the validation text of the fast decode path.
 */
import { ConfigError } from '../models/config.js';
import { loadCorpusSplits } from '../data/corpus.js';
import { quantizedLoss } from '../infer/quality.js';
import { DecodeEngine } from '../infer/decode.js';
import type { QuantFormat, QuantKernels } from '../kernels/quant.js';
import { ADAPT_DOMAINS, loadAnyModel, writeAdaptReport, type AdaptReport, type ModelMeasure } from './common.js';

/** Expert weight format of each --bits value: moe-ts q2_m / q3_m below 4 bits, ggml q4_0 / q8_0 above. */
export const EXPERT_BITS: Readonly<Record<number, QuantFormat>> = { 2: 'q2_m', 3: 'q3_m', 4: 'q4_0', 8: 'q8_0', 32: 'f32' };

/** One row of the low-bit experts table. */
export interface ExpertQuantRow {
  bits: number;
  format: QuantFormat;
  /** Bytes of the routed experts' weights, and of every weight the fast path holds. */
  expertBytes: number;
  totalBytes: number;
  /** Stored bits per expert weight (scales and minima included). */
  bitsPerWeight: number;
}

/** Loss per domain with the experts in each of `bits` (32 = the f32 reference row, always first). */
export function runQuantizeExperts(o: {
  model: string;
  bits: number[];
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
  for (const b of o.bits) if (!(b in EXPERT_BITS) || b === 32) throw new ConfigError(`quantize: --bits must be among 2, 3, 4, 8, got ${b}`);
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
  const settings = [32, ...o.bits.filter((b, i) => o.bits.indexOf(b) === i)];
  const rows: ModelMeasure[] = [];
  const table: ExpertQuantRow[] = [];
  for (const bits of settings) {
    const format = EXPERT_BITS[bits];
    const t0 = performance.now();
    const per = texts.map((t) => ({
      domain: t.domain,
      r: quantizedLoss(model, tokenizer, t.text, { quants: [format], expertsOnly: true, rest, maxTokens: o.tokens ?? 2048, ...(o.kernels ? { kernels: o.kernels } : {}) })[0],
    }));
    const secs = (performance.now() - t0) / 1000;
    const tokens = per.reduce((s, p) => s + p.r.tokens, 0);
    const r0 = per[0].r;
    rows.push({
      label: bits === 32 ? `experts f32, rest ${rest}` : `experts ${bits}-bit (${format}), rest ${rest}`,
      loss: per.reduce((s, p) => s + p.r.loss * p.r.tokens, 0) / tokens,
      domains: per.map((p) => ({ domain: p.domain, loss: p.r.loss, tokens: p.r.tokens })),
      params: model.numParameters(),
      activeParams: model.activeParameters(),
      tokensPerSec: tokens / Math.max(secs, 1e-9),
    });
    table.push({ bits, format, expertBytes: r0.expertBytes, totalBytes: r0.weightBytes, bitsPerWeight: (8 * r0.expertBytes) / probe.expertParams });
  }
  const report: AdaptReport = {
    command: 'quantize --experts-only',
    summary: `Low-bit experts (MoQE, 2023): the routed FFN experts in each format, every other weight in ${rest}; loss of the fast decode path on the validation text of ${sources.join(', ')} (up to ${o.tokens ?? 2048} tokens each).`,
    rows,
    columns: [
      { head: 'bits/expert weight', values: table.map((t) => t.bitsPerWeight.toFixed(2)) },
      { head: 'expert bytes', values: table.map((t) => t.expertBytes.toLocaleString('en-US')) },
      { head: 'total bytes', values: table.map((t) => t.totalBytes.toLocaleString('en-US')) },
    ],
    table,
  };
  return { ...report, table, ...(o.out ? { files: writeAdaptReport(o.out, 'quantize-experts', report) } : {}) };
}
