/**
 * `moe-ts prune`: drop experts per MoE layer, loss per pruned fraction. Criteria: `usage` (the
 * least summed router weight on calibration text) and `router-change` (A Provably Effective
 * Method for Pruning Experts in Fine-tuned Sparse Mixture-of-Experts, 2024: the experts whose
 * router rows moved least from a reference, the model fine-tuning started from, are pruned).
 */
import { noGrad } from '../tensor/tensor.js';
import { Rng } from '../tensor/random.js';
import { ConfigError } from '../models/config.js';
import type { MoETransformerLM } from '../models/transformer.js';
import { pruneExperts } from '../models/prune.js';
import { FFNExperts } from '../moe/experts/ffn.js';
import { loadAnyModel, adaptDataset, measureModel, calibrationWindows, writeAdaptReport, prepareOutDir, saveModelRun, type AdaptReport, type MeasureOptions } from './common.js';

/** Router statistics per MoE layer: tokens routed to each expert and the summed gate weight, over the calibration windows. */
export function expertUsage(model: MoETransformerLM, windows: Int32Array[]): { tokens: Float64Array[]; weight: Float64Array[] } {
  const E = model.config.num_local_experts;
  const L = model.moeLayers().length;
  const tokens = Array.from({ length: L }, () => new Float64Array(E));
  const weight = Array.from({ length: L }, () => new Float64Array(E));
  noGrad(() => {
    for (const w of windows) {
      const { aux } = model.forward(w, 1, w.length, { ctx: { training: false, step: 0, rng: new Rng(0) } });
      aux.forEach(({ aux: a }, l) => {
        a.metrics.tokensPerExpert.forEach((v, e) => (tokens[l][e] += v));
        const { probs } = a.router;
        for (let i = 0; i < probs.data.length; i++) weight[l][i % E] += probs.data[i];
      });
    }
  });
  return { tokens, weight };
}

/** Per layer, the `n` experts with the highest summed router weight (ties: lower index). */
export function mostUsedExperts(weight: Float64Array[], n: number): number[][] {
  return weight.map((w) =>
    Array.from(w, (v, e) => [v, e] as const)
      .sort((a, b) => b[0] - a[0] || a[1] - b[1])
      .slice(0, n)
      .map(([, e]) => e)
      .sort((a, b) => a - b),
  );
}

/** Expert-pruning criteria of runPrune. */
export const PRUNE_CRITERIA = ['usage', 'router-change', 'moe-pruner'] as const;
/** One of PRUNE_CRITERIA. */
export type PruneCriterion = (typeof PRUNE_CRITERIA)[number];

/**
 * Per MoE layer, the L2 norm of each expert's router-row change ||W_e - W0_e|| over every router
 * tensor with a leading expert axis (gate rows, per-expert biases), `reference` giving W0.
 */
export function routerChange(model: MoETransformerLM, reference: MoETransformerLM): Float64Array[] {
  const E = model.config.num_local_experts;
  if (reference.config.num_local_experts !== E) throw new ConfigError(`prune --reference: it has ${reference.config.num_local_experts} experts per layer, the model ${E}`);
  const moe = model.layers.flatMap((l, i) => (l.block_sparse_moe ? [i] : []));
  const ref = reference.stateDict();
  const out = moe.map(() => new Float64Array(E));
  let found = 0;
  for (const [name, t] of model.stateDict()) {
    const m = /^layers\.(\d+)\.block_sparse_moe\.router\./.exec(name);
    if (!m || t.shape[0] !== E) continue;
    const r = ref.get(name);
    if (!r || r.data.length !== t.data.length) throw new ConfigError(`prune --reference: router tensor ${name} [${t.shape.join(', ')}] has no counterpart of that shape in the reference`);
    const l = moe.indexOf(Number(m[1]));
    const per = t.data.length / E;
    for (let i = 0; i < t.data.length; i++) out[l][Math.floor(i / per)] += (t.data[i] - r.data[i]) ** 2;
    found++;
  }
  if (found === 0) throw new ConfigError('prune --criterion router-change: the routers have no per-expert weight rows');
  return out.map((v) => v.map(Math.sqrt));
}

/**
 * MoE-Pruner's activation statistics (MoE-Pruner: Pruning Mixture-of-Experts Large Language Model
 * using the Hints from Its Router, 2024): per MoE layer and expert, the squared norm over the
 * calibration tokens routed to it of each input feature scaled by the token's gate weight,
 * sum_t (g_t x_t,i)^2, for the w1/w3 input (the layer input) and the w2 input (the hidden activation).
 */
export function moePrunerStats(model: MoETransformerLM, windows: Int32Array[]): { in1: Float64Array[]; in2: Float64Array[] } {
  const layers = model.layers.filter((l) => l.block_sparse_moe);
  const banks = layers.map((l) => l.block_sparse_moe!.experts);
  for (const b of banks) if (!(b instanceof FFNExperts)) throw new ConfigError('prune --criterion moe-pruner: needs FFN experts');
  const ffn = banks as FFNExperts[];
  const in1 = ffn.map((b) => new Float64Array(b.numExperts * b.dModel));
  const in2 = ffn.map((b) => new Float64Array(b.numExperts * b.dFF));
  const originals = layers.map((l) => l.block_sparse_moe!.router.route);
  layers.forEach((l, li) => {
    const r = l.block_sparse_moe!.router;
    const orig = originals[li];
    r.route = (x, ctx) => {
      const out = orig.call(r, x, ctx);
      if (out.routing.kind !== 'sparse') throw new ConfigError('prune --criterion moe-pruner: needs a sparse (token-choice) router');
      const { tokenIdx, expertIdx, weights } = out.routing;
      const b = ffn[li];
      const [d, f] = [b.dModel, b.dFF];
      const h = new Float64Array(f);
      for (let a = 0; a < tokenIdx.length; a++) {
        const e = expertIdx[a];
        const g = weights.data[a];
        const xo = tokenIdx[a] * d;
        for (let i = 0; i < d; i++) in1[li][e * d + i] += (g * x.data[xo + i]) ** 2;
        // the expert's hidden activation on this token
        const o = e * d * f;
        h.fill(0);
        const v = new Float64Array(f);
        for (let i = 0; i < d; i++) {
          const xi = x.data[xo + i];
          for (let j = 0; j < f; j++) {
            h[j] += xi * b.w1.data[o + i * f + j];
            if (b.w3) v[j] += xi * b.w3.data[o + i * f + j];
          }
        }
        for (let j = 0; j < f; j++) {
          const z = h[j];
          const act = b.activation === 'swiglu' ? (z / (1 + Math.exp(-z))) * v[j] : 0.5 * z * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (z + 0.044715 * z * z * z)));
          in2[li][e * f + j] += (g * act) ** 2;
        }
      }
      return out;
    };
  });
  try {
    noGrad(() => {
      for (const w of windows) model.forward(w, 1, w.length, { ctx: { training: false, step: 0, rng: new Rng(0) } });
    });
  } finally {
    layers.forEach((l, li) => (l.block_sparse_moe!.router.route = originals[li]));
  }
  return { in1, in2 };
}

/**
 * Zero the `fraction` of each expert output row's weights with the least |W_ij| * ||g x_j|| (the
 * MoE-Pruner score, unstructured, per output neuron), in place; returns the weights zeroed.
 */
export function applyMoEPruner(model: MoETransformerLM, stats: { in1: Float64Array[]; in2: Float64Array[] }, fraction: number): number {
  let zeroed = 0;
  const ffn = model.layers.filter((l) => l.block_sparse_moe).map((l) => l.block_sparse_moe!.experts as FFNExperts);
  ffn.forEach((b, li) => {
    const [d, f, E] = [b.dModel, b.dFF, b.numExperts];
    // [in, out] input-major per expert: output row j is the column j
    const mats: [Float32Array, number, number, Float64Array][] = [
      [b.w1.data, d, f, stats.in1[li]],
      [b.w2.data, f, d, stats.in2[li]],
    ];
    if (b.w3) mats.push([b.w3.data, d, f, stats.in1[li]]);
    for (const [w, nin, nout, a] of mats) {
      const k = Math.round(fraction * nin);
      if (k === 0) continue;
      const sc = new Float64Array(nin);
      const idx = Array.from({ length: nin }, (_, i) => i);
      for (let e = 0; e < E; e++)
        for (let j = 0; j < nout; j++) {
          const o = e * nin * nout;
          for (let i = 0; i < nin; i++) sc[i] = Math.abs(w[o + i * nout + j]) * Math.sqrt(a[e * nin + i]);
          idx.sort((p, q) => sc[p] - sc[q] || p - q);
          for (let t = 0; t < k; t++) w[o + idx[t] * nout + j] = 0;
          zeroed += k;
        }
    }
  });
  return zeroed;
}

/** Prune each fraction, measure each; save the model of `save` (default: the largest fraction) as a run. */
export function runPrune(
  o: { model: string; out: string; fractions: number[]; save?: number; calibration?: number; overwrite?: boolean; criterion?: PruneCriterion; reference?: string } & MeasureOptions,
): AdaptReport & { files: { md: string; json: string } } {
  const src = loadAnyModel(o.model);
  const E = src.model.config.num_local_experts;
  if (E === 0) throw new ConfigError(`prune: ${o.model} is a dense model (no experts to prune)`);
  for (const f of o.fractions) if (!(f >= 0 && f < 1)) throw new ConfigError(`prune: fractions must be in [0, 1), got ${f}`);
  const { data } = adaptDataset(src, o);
  const batches = o.batches ?? src.config.training.eval_batches;
  const criterion = o.criterion ?? 'usage';
  if (!(PRUNE_CRITERIA as readonly string[]).includes(criterion)) throw new ConfigError(`prune: --criterion must be one of ${PRUNE_CRITERIA.join(', ')}, got ${JSON.stringify(criterion)}`);
  if (criterion === 'router-change' && !o.reference) throw new ConfigError('prune --criterion router-change needs --reference <model>: the model fine-tuning started from (e.g. the upcycled run)');
  const usage = expertUsage(src.model, calibrationWindows(data, o.calibration ?? 8));
  const stats = criterion === 'moe-pruner' ? moePrunerStats(src.model, calibrationWindows(data, o.calibration ?? 8)) : null;
  const change = criterion === 'router-change' ? routerChange(src.model, loadAnyModel(o.reference!).model) : null;
  // the score per expert: higher is kept
  const score = change ?? usage.weight;
  const rows = [measureModel(`${E} experts (before)`, src.model, data, batches)];
  const kept: { fraction: number; experts: number; keep: number[][]; zeroed?: number }[] = [];
  let toSave: MoETransformerLM | null = null;
  const saveF = o.save ?? Math.max(...o.fractions);
  for (const f of o.fractions) {
    if (stats) {
      // MoE-Pruner: the fraction is the weight sparsity inside every expert; all experts stay
      const m = pruneExperts(
        src.model,
        src.model.moeLayers().map(() => Array.from({ length: E }, (_, e) => e)),
      ).eval();
      const zeroed = applyMoEPruner(m, stats, f);
      rows.push(measureModel(`${Math.round(f * 100)}% of expert weights zeroed (MoE-Pruner)`, m, data, batches));
      kept.push({ fraction: f, experts: E, keep: [], zeroed });
      if (f === saveF) toSave = m;
      continue;
    }
    const n = Math.max(1, E - Math.round(f * E));
    const keep = mostUsedExperts(score, n);
    const m = pruneExperts(src.model, keep).eval();
    rows.push(measureModel(`pruned ${Math.round(f * 100)}% -> ${n} experts`, m, data, batches));
    kept.push({ fraction: f, experts: n, keep });
    if (f === saveF) toSave = m;
  }
  if (!toSave) throw new ConfigError(`prune: --save ${saveF} is not one of the fractions ${o.fractions.join(', ')}`);
  prepareOutDir(o.out, Boolean(o.overwrite));
  saveModelRun(o.out, toSave, src.tokenizer, src.config);
  const report: AdaptReport = {
    command: 'prune',
    summary:
      (stats
        ? `MoE-Pruner (2024): in every expert, each output row's weights with the least |W| x gate-weighted input norm on ${data.domainNames.join(', ')} calibration text are zeroed (fraction = weight sparsity)`
        : change
          ? `Expert pruning by router-weight change (A Provably Effective Method for Pruning Experts in Fine-tuned Sparse MoE, 2024): per MoE layer the experts whose router rows moved most from ${o.reference} are kept`
          : `Expert pruning by router statistics: per MoE layer the experts with the highest summed router weight on ${data.domainNames.join(', ')} calibration text are kept`) +
      `; the run in ${o.out} is the ${Math.round(saveF * 100)}% model.`,
    criterion,
    rows,
    kept,
    usage: { tokens: usage.tokens.map((t) => Array.from(t)), weight: usage.weight.map((w) => Array.from(w)) },
    ...(change ? { routerChange: change.map((c) => Array.from(c)) } : {}),
  };
  return { ...report, files: writeAdaptReport(o.out, 'prune', report) };
}
