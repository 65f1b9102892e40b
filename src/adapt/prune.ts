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
export const PRUNE_CRITERIA = ['usage', 'router-change'] as const;
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
  const change = criterion === 'router-change' ? routerChange(src.model, loadAnyModel(o.reference!).model) : null;
  // the score per expert: higher is kept
  const score = change ?? usage.weight;
  const rows = [measureModel(`${E} experts (before)`, src.model, data, batches)];
  const kept: { fraction: number; experts: number; keep: number[][] }[] = [];
  let toSave: MoETransformerLM | null = null;
  const saveF = o.save ?? Math.max(...o.fractions);
  for (const f of o.fractions) {
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
      (change
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
