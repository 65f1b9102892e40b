/**
 * Time-MoE (Time-MoE: Billion-Scale Time Series Foundation Models with Mixture of Experts, Shi et
 * al. 2024): a decoder-only forecaster of real values. Each time step is one token: its
 * (window-normalised) value is embedded point-wise by a SwiGLU of the scalar, the same causal
 * decoder blocks as the language model (DecoderLayer: RMSNorm, causal RoPE attention, MoE FFN with
 * a sigmoid-gated shared expert) run over the steps, and several linear forecasting heads read the
 * last hidden state, head j predicting the next p_j values (multi-resolution forecasting). The
 * training loss is the Huber loss averaged over heads plus the MoE layers' balancing losses; a
 * long horizon is forecast autoregressively, each round with the largest head that fits.
 */
import { Tensor, noGrad, result, accumulateGrad } from '../tensor/tensor.js';
import { Rng } from '../tensor/random.js';
import * as T from '../tensor/index.js';
import { z, posInt, positive, parseOrThrow, ConfigError } from '../tensor/validate.js';
import { Module, Linear, RMSNorm } from '../nn/index.js';
import type { MoEAux, RouterContext } from '../moe/types.js';
import { DecoderLayer } from './transformer.js';
import { parseModelConfig, type ModelConfig } from './config.js';

/** Forecast options of a Time-MoE model (the "forecast" section of a forecast config). */
export const ForecastConfigSchema = z
  .object({
    /** Output lengths of the forecasting heads (Time-MoE uses 1, 8, 32, 64). */
    horizons: z.array(posInt()).min(1).default([1, 8, 32]),
    /** Huber loss threshold on normalised values (the paper's 2.0). */
    huber_delta: positive().default(2),
    /** Horizon of the reported metrics (MAE/MSE against the baselines). */
    eval_horizon: posInt().default(32),
    /** Season length in steps for the seasonal-naive baseline (default: the embedded series' own, else none). */
    seasonal_period: posInt().optional(),
  })
  .strict()
  .superRefine((c, ctx) => {
    for (let i = 1; i < c.horizons.length; i++)
      if (c.horizons[i] <= c.horizons[i - 1]) ctx.addIssue({ code: 'custom', path: ['horizons', i], message: `must increase strictly (longer than ${c.horizons[i - 1]})` });
  });

/** Parsed forecast options. */
export type ForecastConfig = z.output<typeof ForecastConfigSchema>;

/** Parse forecast options, errors naming the field. */
export function parseForecastConfig(value: unknown, where = 'forecast config'): ForecastConfig {
  return parseOrThrow(ForecastConfigSchema, value ?? {}, { where: `invalid ${where}`, sep: ': ' });
}

/**
 * Model fields Time-MoE sets unless the config does: one sigmoid-gated shared expert next to the
 * routed ones (8 experts, top-2, as in the paper) and the balancing loss at the paper's weight
 * (0.02); a width that trains in minutes on a CPU. The vocabulary is unused.
 */
export const TIME_MOE_MODEL_DEFAULTS = {
  vocab_size: 1,
  hidden_size: 32,
  num_attention_heads: 4,
  num_hidden_layers: 2,
  num_local_experts: 8,
  num_experts_per_tok: 2,
  moe_intermediate_size: 32,
  intermediate_size: 64,
  max_position_embeddings: 128,
  n_shared_experts: 1,
  shared_expert_gate: true,
  router_aux_loss_coef: 0.02,
  router_z_loss_coef: 0,
} as const;

/** A Time-MoE backbone config: the user's model fields over TIME_MOE_MODEL_DEFAULTS. */
export function timeMoEModelConfig(model: Record<string, unknown> = {}, where = 'forecast model config'): ModelConfig {
  const c = parseModelConfig({ ...TIME_MOE_MODEL_DEFAULTS, ...model }, where);
  // its budget loss and gate dropout live in MoETransformerLM.forward, which the forecaster does not run
  if (c.conditional_moe_routing) throw new ConfigError(`invalid ${where}: conditional_moe_routing is not supported by the Time-MoE forecaster`);
  return c;
}

/** Mean and standard deviation of values[start, start + len), the std floored so a flat window does not divide by 0. */
export function windowStats(values: ArrayLike<number>, start: number, len: number): { mean: number; std: number } {
  let m = 0;
  for (let i = 0; i < len; i++) m += values[start + i];
  m /= len;
  let v = 0;
  for (let i = 0; i < len; i++) v += (values[start + i] - m) ** 2;
  const std = Math.sqrt(v / len);
  return { mean: m, std: Math.max(std, 1e-5 * Math.max(1, Math.abs(m))) };
}

/** Mean Huber loss of numbers (no gradient): 0.5 r^2 where |r| <= delta, delta (|r| - delta/2) beyond (r = pred - target). */
export function huberValue(pred: ArrayLike<number>, target: ArrayLike<number>, delta: number): number {
  if (pred.length !== target.length) throw new Error(`huberLoss: ${pred.length} predictions for ${target.length} targets`);
  if (!(delta > 0)) throw new Error(`huberLoss: delta must be > 0, got ${delta}`);
  let s = 0;
  for (let i = 0; i < pred.length; i++) {
    const a = Math.abs(pred[i] - target[i]);
    s += a <= delta ? 0.5 * a * a : delta * (a - 0.5 * delta);
  }
  return pred.length > 0 ? s / pred.length : 0;
}

/** Mean Huber loss of pred against target (differentiable in pred); quadratic near 0, linear beyond delta, so outliers pull less than under MSE. */
export function huberLoss(pred: Tensor, target: Float32Array, delta: number): Tensor {
  const n = pred.size;
  const p = pred.data;
  const v = huberValue(p, target, delta);
  return result(new Float32Array([v]), [], [pred], (g) => {
    const gx = new Float32Array(n);
    const c = n > 0 ? g[0] / n : 0;
    // d/dr: r inside the threshold, delta * sign(r) outside (the clipped residual)
    for (let i = 0; i < n; i++) gx[i] = c * Math.max(-delta, Math.min(delta, p[i] - target[i]));
    accumulateGrad(pred, gx, true);
  });
}

/** One forward: per head j the forecasts [B*L, p_j] of every position, and the MoE layers' aux records. */
export interface TimeMoEOutput {
  outputs: Tensor[];
  aux: { layer: number; aux: MoEAux }[];
  /** Losses of attention experts (already scaled), by name. */
  losses: Record<string, Tensor>;
}

/** The Time-MoE forecaster: point-wise embedding, the LM's decoder blocks, one linear head per horizon. */
export class TimeMoE extends Module {
  /** Point-wise SwiGLU embedding of the scalar input: silu(x w_g) * (x w_u), w_g, w_u [d, 1]. */
  embed_gate: Linear;
  embed_up: Linear;
  layers: DecoderLayer[];
  norm: RMSNorm;
  /** Forecasting heads, head j: [horizons[j], d]. */
  heads: Linear[];
  readonly horizons: number[];
  constructor(
    readonly config: ModelConfig,
    horizons: readonly number[],
    seed: number,
  ) {
    super();
    if (horizons.length === 0) throw new ConfigError('TimeMoE: horizons must name at least one head');
    this.horizons = [...horizons];
    const rng = new Rng(seed);
    const d = config.hidden_size;
    this.embed_gate = new Linear(1, d, rng);
    this.embed_up = new Linear(1, d, rng);
    this.layers = [];
    for (let i = 0; i < config.num_hidden_layers; i++) this.layers.push(new DecoderLayer(config, i, rng));
    this.norm = new RMSNorm(d, config.rms_norm_eps);
    this.heads = this.horizons.map((p) => new Linear(d, p, rng, { std: config.initializer_range }));
  }

  /** Longest head output. */
  get maxHorizon(): number {
    return this.horizons[this.horizons.length - 1];
  }

  /** x: normalised values [B*L] (sequence-major) -> every head's forecasts at every position. */
  forward(x: Float32Array, B: number, L: number, ctx: Omit<RouterContext, 'tokenIds'>): TimeMoEOutput {
    if (x.length !== B * L) throw new Error(`TimeMoE.forward: ${x.length} values for batch ${B} x ${L}`);
    if (L > this.config.max_position_embeddings) throw new Error(`TimeMoE.forward: ${L} steps exceed max_position_embeddings ${this.config.max_position_embeddings}`);
    const xi = T.tensor(x, [B * L, 1]);
    let h = T.swiglu(this.embed_gate.forward(xi), this.embed_up.forward(xi));
    const rctx: RouterContext = { ...ctx, state: new Map(), batchShape: { batch: B, seqLen: L }, embeddings: h };
    const aux: TimeMoEOutput['aux'] = [];
    const losses: Record<string, Tensor> = {};
    // the language model's block, step for step (pre-norm attention and FFN, residual adds)
    this.layers.forEach((layer, i) => {
      const a = layer.self_attn.forward(layer.input_layernorm.forward(h), B, L, undefined, rctx);
      for (const [name, l] of Object.entries(a.losses ?? {})) losses[`attention.${name}`] = losses[`attention.${name}`] ? T.add(losses[`attention.${name}`], l) : l;
      h = T.add(h, a.y);
      const r = layer.ffn(layer.post_attention_layernorm.forward(h), rctx, this.config.router_jitter_noise);
      if (r.aux) aux.push({ layer: i, aux: r.aux });
      h = T.add(h, r.y);
    });
    h = this.norm.forward(h);
    return { outputs: this.heads.map((head) => head.forward(h)), aux, losses };
  }

  /** Parameters a step uses (shared + top-k routed experts), as MoETransformerLM counts them. */
  activeParameters(): number {
    const c = this.config;
    let total = 0;
    for (const [name, p] of this.namedParameters()) {
      if (name.includes('block_sparse_moe') && name.includes('experts') && !name.includes('shared'))
        total += (p.size / Math.max(1, c.num_local_experts)) * Math.min(c.num_experts_per_tok, c.num_local_experts);
      else total += p.size;
    }
    return Math.round(total);
  }

  afterStep(): void {
    for (const l of this.layers) l.block_sparse_moe?.afterStep();
  }
}

/**
 * The Time-MoE training loss: the Huber loss of each head against its targets (targets[j]
 * [B*L*p_j], normalised like the inputs), averaged over heads, plus every balancing loss.
 */
export function timeMoELoss(res: TimeMoEOutput, targets: readonly Float32Array[], delta: number): { loss: Tensor; huber: Tensor; auxLosses: Record<string, number> } {
  if (targets.length !== res.outputs.length) throw new Error(`timeMoELoss: ${targets.length} target sets for ${res.outputs.length} heads`);
  let huber = huberLoss(res.outputs[0], targets[0], delta);
  for (let j = 1; j < targets.length; j++) huber = T.add(huber, huberLoss(res.outputs[j], targets[j], delta));
  huber = T.scale(huber, 1 / targets.length);
  let loss = huber;
  const auxLosses: Record<string, number> = {};
  for (const losses of [...res.aux.map((a) => a.aux.losses), res.losses]) {
    for (const [name, l] of Object.entries(losses)) {
      loss = T.add(loss, l);
      auxLosses[name] = (auxLosses[name] ?? 0) + l.item();
    }
  }
  return { loss, huber, auxLosses };
}

/**
 * Which heads forecast `horizon` steps, in order: greedily the longest head that does not
 * overshoot, the shortest head (truncated) when none fits.
 */
export function headSchedule(horizons: readonly number[], horizon: number): number[] {
  if (!(Number.isInteger(horizon) && horizon >= 1)) throw new Error(`headSchedule: horizon must be a positive integer, got ${horizon}`);
  const out: number[] = [];
  let left = horizon;
  while (left > 0) {
    let j = -1;
    for (let i = 0; i < horizons.length; i++) if (horizons[i] <= left) j = i;
    if (j < 0) j = 0;
    out.push(j);
    left -= horizons[j];
  }
  return out;
}

/**
 * Forecast `horizon` values after each context (all of one length L), autoregressively: each
 * round normalises the last L values (known and forecast) by their own mean and std, runs the
 * model once and appends the scheduled head's forecast from the last position, denormalised.
 */
export function forecast(model: TimeMoE, contexts: readonly ArrayLike<number>[], horizon: number): Float64Array[] {
  const B = contexts.length;
  if (B === 0) return [];
  const L = contexts[0].length;
  if (L < 1 || contexts.some((c) => c.length !== L)) throw new Error(`forecast: contexts must all have one positive length, got ${[...new Set(contexts.map((c) => c.length))].join(', ')}`);
  const windows = contexts.map((c) => Array.from(c));
  const out = contexts.map(() => new Float64Array(horizon));
  let done = 0;
  const wasTraining = model.training;
  model.eval();
  try {
    noGrad(() => {
      for (const j of headSchedule(model.horizons, horizon)) {
        const x = new Float32Array(B * L);
        const stats = windows.map((w, b) => {
          const s = windowStats(w, w.length - L, L);
          for (let t = 0; t < L; t++) x[b * L + t] = (w[w.length - L + t] - s.mean) / s.std;
          return s;
        });
        const res = model.forward(x, B, L, { training: false, step: 0, rng: new Rng(0) });
        const p = model.horizons[j];
        const y = res.outputs[j].data;
        const take = Math.min(p, horizon - done);
        for (let b = 0; b < B; b++) {
          const o = (b * L + L - 1) * p;
          for (let i = 0; i < take; i++) {
            const v = y[o + i] * stats[b].std + stats[b].mean;
            out[b][done + i] = v;
            windows[b].push(v);
          }
        }
        done += take;
      }
    });
  } finally {
    model.train(wasTraining);
  }
  return out;
}
