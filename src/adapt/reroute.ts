/**
 * R2-T2-style test-time re-routing (R2-T2: Re-Routing in Test-Time for Multimodal Mixture-of-
 * Experts, 2025), for text: record the router inputs and routing probabilities of reference
 * tokens the model predicts correctly, then evaluate with every MoE layer's routing pulled toward
 * that of each token's nearest reference tokens (src/moe/reroute.ts), loss before and after.
 */
import { noGrad, type Tensor } from '../tensor/tensor.js';
import { Rng } from '../tensor/random.js';
import type { RouterOutput } from '../moe/types.js';
import type { RoutingOverride } from '../moe/override.js';
import { KnnReroute, unitRows, type RerouteOptions, type RerouteReference } from '../moe/reroute.js';
import type { MoETransformerLM } from '../models/transformer.js';
import type { MixedDataset } from '../data/dataset.js';
import type { Tokenizer } from '../data/tokenizer/index.js';
import { moeLayerIndices, setRoutingOverrides } from '../infer/steer.js';
import { evaluate, type EvalResult } from '../train/evaluate.js';

/** Records router inputs and probabilities per call (identity on the routing). */
class Capture implements RoutingOverride {
  readonly name = 'capture';
  calls: { x: Float32Array; probs: Float32Array; T: number }[] = [];
  apply(x: Tensor, out: RouterOutput): RouterOutput {
    this.calls.push({ x: x.data.slice(), probs: out.probs.data.slice(), T: x.shape[0] });
    return out;
  }
}

/** Which reference tokens buildRerouteReference keeps. */
export interface ReferenceOptions {
  /** Reference tokens kept per layer at most (default 2048). */
  maxTokens?: number;
  /** Keep only positions whose most likely next token is the actual one (default true: "where the model does well"). */
  correctOnly?: boolean;
}

/**
 * The reference of every MoE layer from token windows (each run as one sequence; a position
 * counts as correct when its argmax prediction is the window's next token, so the last position
 * of each window is left out under correctOnly).
 */
export function buildRerouteReference(model: MoETransformerLM, windows: readonly Int32Array[], opts: ReferenceOptions = {}): Map<number, RerouteReference> {
  const layers = moeLayerIndices(model);
  if (!layers.length) throw new Error('reroute: the model has no MoE layers');
  const max = opts.maxTokens ?? 2048;
  const correctOnly = opts.correctOnly ?? true;
  const V = model.config.vocab_size;
  const caps = layers.map(() => new Capture());
  const keep: boolean[] = [];
  const restore = setRoutingOverrides(model, new Map(layers.map((l, i) => [l, caps[i]])));
  const wasTraining = model.training;
  model.eval();
  try {
    noGrad(() => {
      for (const ids of windows) {
        if (keep.filter(Boolean).length >= max) break;
        const logits = model.forward(ids, 1, ids.length, { ctx: { training: false, step: 0, rng: new Rng(0) } }).logits.data;
        for (let t = 0; t < ids.length; t++) {
          if (!correctOnly) {
            keep.push(true);
            continue;
          }
          let best = 0;
          for (let v = 1; v < V; v++) if (logits[t * V + v] > logits[t * V + best]) best = v;
          keep.push(t + 1 < ids.length && best === ids[t + 1]);
        }
      }
    });
  } finally {
    restore();
    model.train(wasTraining);
  }
  const out = new Map<number, RerouteReference>();
  layers.forEach((layer, li) => {
    const calls = caps[li].calls;
    const T = calls.reduce((s, c) => s + c.T, 0);
    if (T !== keep.length) throw new Error(`reroute: layer ${layer} routed ${T} rows for ${keep.length} tokens (sub-token routing is not supported)`);
    const d = calls[0].x.length / calls[0].T;
    const E = calls[0].probs.length / calls[0].T;
    const rows: number[] = [];
    const probs: number[] = [];
    let t = 0;
    let n = 0;
    for (const c of calls) {
      for (let i = 0; i < c.T; i++, t++) {
        if (!keep[t] || n >= max) continue;
        for (let j = 0; j < d; j++) rows.push(c.x[i * d + j]);
        for (let e = 0; e < E; e++) probs.push(c.probs[i * E + e]);
        n++;
      }
    }
    if (n === 0) throw new Error(`reroute: no reference token kept${correctOnly ? ' (none predicted correctly; more reference text, or correctOnly false)' : ''}`);
    out.set(layer, { rows: unitRows(rows, n, d), probs: Float32Array.from(probs), n, d, numExperts: E });
  });
  return out;
}

/** Reference windows of `seqLen` tokens from a text. */
export function referenceWindows(tokenizer: Tokenizer, text: string, seqLen: number, maxWindows = 64): Int32Array[] {
  // enough characters for the windows (a token is rarely longer than 16 characters)
  const ids = tokenizer.encode(text.slice(0, maxWindows * seqLen * 16));
  const out: Int32Array[] = [];
  for (let o = 0; o + 2 <= ids.length && out.length < maxWindows; o += seqLen) out.push(ids.slice(o, Math.min(ids.length, o + seqLen)));
  if (!out.length) throw new Error('reroute: the reference text is too short (needs at least 2 tokens)');
  return out;
}

/** Run fn with kNN re-routing in every MoE layer that has a reference, restoring the routing afterwards. */
export function withReroute<T>(model: MoETransformerLM, refs: ReadonlyMap<number, RerouteReference>, opts: RerouteOptions, fn: () => T): T {
  const restore = setRoutingOverrides(model, new Map([...refs].map(([l, r]) => [l, new KnnReroute(r, opts)])));
  try {
    return fn();
  } finally {
    restore();
  }
}

/** Validation loss per domain before and after re-routing toward the reference. */
export function rerouteEvaluate(
  model: MoETransformerLM,
  data: MixedDataset,
  refs: ReadonlyMap<number, RerouteReference>,
  opts: RerouteOptions & { maxBatches?: number } = {},
): { before: EvalResult; after: EvalResult } {
  const before = evaluate(model, data, { maxBatches: opts.maxBatches });
  const after = withReroute(model, refs, opts, () => evaluate(model, data, { maxBatches: opts.maxBatches }));
  return { before, after };
}
