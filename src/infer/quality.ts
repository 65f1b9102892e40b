/**
 * Quality of quantised weights: next-token cross-entropy of the fast decode path in each weight
 * format on the same text (non-overlapping windows, every position scored), so q8_0 / q4_0 are
 * reported against f32 of the same model.
 */
import type { MoETransformerLM } from '../models/transformer.js';
import type { Tokenizer } from '../data/tokenizer/index.js';
import type { QuantFormat, QuantKernels, QuantizeOptions } from '../kernels/quant.js';
import { DecodeEngine, type DecodeEngineOptions } from './decode.js';

/** One weight format's loss on the text. */
export interface QuantLoss {
  quant: QuantFormat;
  /** Mean next-token cross-entropy (nats). */
  loss: number;
  /** Scored tokens. */
  tokens: number;
  /** Bytes of weights the fast path holds in this format. */
  weightBytes: number;
  /** The routed FFN experts' part of weightBytes, and their format. */
  expertBytes: number;
  expertQuant: QuantFormat;
}

/**
 * Cross-entropy of `text` under the fast path in each of `quants` (windows of at most
 * max_position_embeddings, capped at `maxTokens`). With `expertsOnly`, each format applies to
 * the routed experts alone and every other weight is in `rest` (default f32): MoQE's setting.
 */
export function quantizedLoss(
  model: MoETransformerLM,
  tokenizer: Tokenizer,
  text: string,
  opts: {
    quants: QuantFormat[];
    maxTokens?: number;
    window?: number;
    kernels?: QuantKernels;
    expertsOnly?: boolean;
    rest?: QuantFormat;
    expertQuantOptions?: QuantizeOptions;
    expertWeights?: DecodeEngineOptions['expertWeights'];
  },
): QuantLoss[] {
  const ids = scoredIds('quantizedLoss', tokenizer, text, opts.maxTokens);
  const W = Math.min(opts.window ?? 128, model.config.max_position_embeddings);
  const V = model.config.vocab_size;
  return opts.quants.map((quant) => {
    const q = opts.expertsOnly ? { quant: opts.rest ?? 'f32', expertQuant: quant } : { quant };
    const eng = new DecodeEngine(model, {
      ...q,
      capacity: W,
      ...(opts.kernels ? { kernels: opts.kernels } : {}),
      ...(opts.expertQuantOptions ? { expertQuantOptions: opts.expertQuantOptions } : {}),
      ...(opts.expertWeights ? { expertWeights: opts.expertWeights } : {}),
    });
    const r = engineLoss(eng, ids, W, V);
    return { quant, loss: r.loss, tokens: r.tokens, weightBytes: eng.weightBytes, expertBytes: eng.expertBytes, expertQuant: eng.expertQuant };
  });
}

/** The first maxTokens (default 4096) ids of text, at least 2; `what` names the caller in the errors. */
function scoredIds(what: string, tokenizer: Tokenizer, text: string, maxTokens = 4096): Int32Array {
  if (!Number.isInteger(maxTokens) || maxTokens < 2) throw new Error(`${what}: maxTokens must be an integer >= 2, got ${maxTokens}`);
  const ids = tokenizer.encode(text).subarray(0, maxTokens);
  if (ids.length < 2) throw new Error(`${what}: the text encodes to ${ids.length} token(s); at least 2 are needed`);
  return ids;
}

/**
 * quantizedLoss's measurement on an engine already compiled (so several texts share one
 * compilation): the same windows of `window` tokens (default 128, at most the engine's capacity)
 * and token cap.
 */
export function engineTextLoss(eng: DecodeEngine, tokenizer: Tokenizer, text: string, opts: { maxTokens?: number; window?: number } = {}): { loss: number; tokens: number } {
  const ids = scoredIds('engineTextLoss', tokenizer, text, opts.maxTokens);
  const W = Math.min(opts.window ?? 128, eng.capacity);
  const r = engineLoss(eng, ids, W, eng.model.config.vocab_size);
  return { loss: r.loss, tokens: r.tokens };
}

/** Mean next-token cross-entropy of ids under `eng`, in windows of W tokens (one prompt batch each), and the batches' tokens/s. */
function engineLoss(eng: DecodeEngine, ids: Int32Array, W: number, V: number): { loss: number; tokens: number; tokensPerSec: number } {
  let sum = 0;
  let n = 0;
  let ms = 0;
  for (let s = 0; s + 1 < ids.length; s += W) {
    const win = ids.subarray(s, Math.min(s + W + 1, ids.length));
    eng.reset();
    const inp = win.subarray(0, win.length - 1);
    const t0 = performance.now();
    const logits = eng.forward(inp, true);
    ms += performance.now() - t0;
    for (let t = 0; t < inp.length; t++) {
      const row = logits.subarray(t * V, (t + 1) * V);
      let m = -Infinity;
      for (let i = 0; i < V; i++) if (row[i] > m) m = row[i];
      let z = 0;
      for (let i = 0; i < V; i++) z += Math.exp(row[i] - m);
      sum += m + Math.log(z) - row[win[t + 1]];
      n++;
    }
  }
  return { loss: sum / n, tokens: n, tokensPerSec: n / (ms / 1000) };
}

/** One routing-aware setting's loss and speed (routingLoss). */
export interface RoutingLoss {
  /** AdapMoE skip threshold (0: off). */
  skipThreshold: number;
  /** Capacity factor of prompt batches (0: off). */
  capacityFactor: number;
  loss: number;
  tokens: number;
  /** Prompt-batch tokens/s (each window is one batch). */
  tokensPerSec: number;
  /** Share of the router's expert assignments skipped / dropped by capacity. */
  skippedShare: number;
  droppedShare: number;
}

/**
 * Validation loss and batch speed of the fast path under routing-aware inference settings
 * (AdapMoE skipping, capacity-aware dropping; the first setting should be the baseline {}), on
 * the same text and windows as quantizedLoss.
 */
export function routingLoss(
  model: MoETransformerLM,
  tokenizer: Tokenizer,
  text: string,
  opts: { settings: { skipThreshold?: number; capacityFactor?: number }[]; quant?: QuantFormat; maxTokens?: number; window?: number; kernels?: QuantKernels },
): RoutingLoss[] {
  const ids = scoredIds('routingLoss', tokenizer, text, opts.maxTokens);
  const W = Math.min(opts.window ?? 128, model.config.max_position_embeddings);
  return opts.settings.map((st) => {
    const eng = new DecodeEngine(model, { quant: opts.quant ?? 'f32', capacity: W, ...st, ...(opts.kernels ? { kernels: opts.kernels } : {}) });
    const r = engineLoss(eng, ids, W, model.config.vocab_size);
    const a = Math.max(1, eng.drops.assignments);
    return {
      skipThreshold: st.skipThreshold ?? 0,
      capacityFactor: st.capacityFactor ?? 0,
      loss: r.loss,
      tokens: r.tokens,
      tokensPerSec: r.tokensPerSec,
      skippedShare: eng.drops.skipped / a,
      droppedShare: eng.drops.capacityDropped / a,
    };
  });
}
