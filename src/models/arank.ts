/**
 * γ-MoD's ARank (Luo et al., "γ-MoD: Exploring Mixture-of-Depth Adaptation for Multimodal Large
 * Language Models", 2024): the rank of a layer's attention maps, averaged over its heads and over
 * calibration sequences. A low-rank map means most tokens' attention rows are combinations of a
 * few others (redundant tokens), so the layer is a safe one to turn into a Mixture-of-Depths layer.
 *
 * Definition used here: for head h of layer l on a sequence of T tokens, A_h is the T x T causal
 * attention probability matrix softmax_j(q_i . k_j / sqrt(Dh)) over j <= i (what the layer
 * actually mixes with, after RoPE and any attention_multiplier). Its numerical rank is the number
 * of singular values above `tolerance * sigma_max`; ARank_l is the mean over heads and sequences.
 * A causal softmax map is lower-triangular with a positive diagonal, so its exact rank is always
 * T: a tolerance well above machine precision is what makes the rank informative.
 */
import { Tensor, noGrad } from '../tensor/tensor.js';
import { Rng } from '../tensor/random.js';
import { ConfigError } from './config.js';
import { Attention, MoETransformerLM } from './transformer.js';

/** Default relative tolerance of the numerical rank (singular values above tolerance * sigma_max count). */
export const ARANK_TOLERANCE = 1e-3;

/**
 * Singular values of the row-major n x m matrix `a` (float64), largest first, by one-sided Jacobi
 * (Hestenes): columns are rotated pairwise until orthogonal; their norms are then the singular values.
 */
export function singularValues(a: ArrayLike<number>, n: number, m: number): Float64Array {
  if (a.length !== n * m) throw new Error(`singularValues: ${a.length} entries for ${n} x ${m}`);
  // column-major working copy: column c at w[c * n ..]
  const w = new Float64Array(n * m);
  for (let i = 0; i < n; i++) for (let c = 0; c < m; c++) w[c * n + i] = a[i * m + c];
  for (let sweep = 0; sweep < 60; sweep++) {
    let rotated = false;
    for (let p = 0; p < m - 1; p++)
      for (let q = p + 1; q < m; q++) {
        let alpha = 0;
        let beta = 0;
        let gamma = 0;
        const po = p * n;
        const qo = q * n;
        for (let i = 0; i < n; i++) {
          const x = w[po + i];
          const y = w[qo + i];
          alpha += x * x;
          beta += y * y;
          gamma += x * y;
        }
        if (gamma === 0 || Math.abs(gamma) <= 1e-15 * Math.sqrt(alpha * beta)) continue;
        rotated = true;
        const zeta = (beta - alpha) / (2 * gamma);
        const t = Math.sign(zeta || 1) / (Math.abs(zeta) + Math.sqrt(1 + zeta * zeta));
        const c = 1 / Math.sqrt(1 + t * t);
        const s = c * t;
        for (let i = 0; i < n; i++) {
          const x = w[po + i];
          const y = w[qo + i];
          w[po + i] = c * x - s * y;
          w[qo + i] = s * x + c * y;
        }
      }
    if (!rotated) break;
  }
  const sv = new Float64Array(m);
  for (let c = 0; c < m; c++) {
    let s = 0;
    for (let i = 0; i < n; i++) s += w[c * n + i] * w[c * n + i];
    sv[c] = Math.sqrt(s);
  }
  return sv.sort().reverse();
}

/** Numerical rank of the row-major n x m matrix: singular values above tolerance * sigma_max (0 for a zero matrix). */
export function numericalRank(a: ArrayLike<number>, n: number, m: number, tolerance = ARANK_TOLERANCE): number {
  if (!(tolerance > 0 && tolerance < 1)) throw new ConfigError(`tolerance must be in (0, 1), got ${tolerance}`);
  const sv = singularValues(a, n, m);
  if (!(sv[0] > 0)) return 0;
  let r = 0;
  for (const s of sv) if (s > tolerance * sv[0]) r++;
  return r;
}

/**
 * The causal attention probabilities of one head: q [T, Dh], k [T, Dh] (row-major, already
 * scaled/rotated as the layer uses them) -> the T x T row-major matrix softmax_j(q_i . k_j / sqrt(Dh)), j <= i.
 */
export function causalAttentionMap(q: ArrayLike<number>, k: ArrayLike<number>, Tn: number, Dh: number): Float64Array {
  const A = new Float64Array(Tn * Tn);
  const sc = 1 / Math.sqrt(Dh);
  for (let i = 0; i < Tn; i++) {
    let mx = -Infinity;
    for (let j = 0; j <= i; j++) {
      let s = 0;
      for (let d = 0; d < Dh; d++) s += q[i * Dh + d] * k[j * Dh + d];
      A[i * Tn + j] = s * sc;
      if (A[i * Tn + j] > mx) mx = A[i * Tn + j];
    }
    let z = 0;
    for (let j = 0; j <= i; j++) z += A[i * Tn + j] = Math.exp(A[i * Tn + j] - mx);
    for (let j = 0; j <= i; j++) A[i * Tn + j] /= z;
  }
  return A;
}

/** One layer's ARank: the mean rank over heads and sequences, with the per-head means. */
export interface LayerARank {
  layer: number;
  /** Mean numerical rank of the layer's attention maps (heads x sequences). */
  arank: number;
  /** Mean rank per head over the sequences. */
  heads: number[];
}

/** Options of computeARank. */
export interface ARankOptions {
  /** Relative singular-value tolerance of the rank (default ARANK_TOLERANCE). */
  tolerance?: number;
}

/**
 * ARank of every layer of a transformer on calibration sequences (each an Int32Array of the same
 * length T): one eval-mode forward per sequence without gradients, each layer's queries and keys
 * captured from its attention, then the rank of every head's causal attention map.
 */
export function computeARank(model: MoETransformerLM, sequences: readonly Int32Array[], opts: ARankOptions = {}): LayerARank[] {
  const tol = opts.tolerance ?? ARANK_TOLERANCE;
  if (!(tol > 0 && tol < 1)) throw new ConfigError(`arank tolerance must be in (0, 1), got ${tol}`);
  if (!sequences.length) throw new ConfigError('arank: no calibration sequence');
  const Tn = sequences[0].length;
  if (Tn < 2) throw new ConfigError(`arank: calibration sequences need at least 2 tokens, got ${Tn}`);
  if (sequences.some((s) => s.length !== Tn)) throw new ConfigError('arank: calibration sequences must all have the same length');
  const c = model.config;
  if (c.mixture_of_depths) throw new ConfigError('arank: the model already has mixture_of_depths (ARank is measured on the dense-depth model)');
  if (c.layer_groups) throw new ConfigError('arank: layer_groups (shared layers) cannot be converted to Mixture-of-Depths layers');
  if (c.sliding_window !== undefined || c.attention_sinks) throw new ConfigError('arank: sliding_window and attention_sinks are not supported (the attention map is taken as full causal softmax)');
  const L = c.num_hidden_layers;
  const layers = model.layers;
  layers.forEach((l, i) => {
    if (!(l.self_attn instanceof Attention))
      throw new ConfigError(`arank: layer ${i} has attention kind ${l.self_attn.constructor.name}; ARank (and Mixture-of-Depths) needs attention_type "standard"`);
  });
  const heads = (layers[0].self_attn as Attention).heads;
  const sums = Array.from({ length: L }, () => new Float64Array(heads));
  const captured: ({ q: Tensor; k: Tensor } | null)[] = new Array<{ q: Tensor; k: Tensor } | null>(L).fill(null);
  const originals = layers.map((l) => l.self_attn.forward);
  // capture each layer's queries and keys as the layer uses them (the instance's forward, restored after)
  layers.forEach((l, i) => {
    const att = l.self_attn as Attention;
    const orig = originals[i];
    att.forward = ((...args: Parameters<Attention['forward']>) => {
      const r = orig.apply(att, args) as ReturnType<Attention['forward']>;
      if (r.q) captured[i] = { q: r.q, k: r.k };
      return r;
    }) as Attention['forward'];
  });
  const wasTraining = model.training;
  model.eval();
  try {
    for (const ids of sequences) {
      captured.fill(null);
      noGrad(() => model.forward(ids, 1, Tn, { ctx: { training: false, step: 0, rng: new Rng(0) } }));
      for (let i = 0; i < L; i++) {
        const cap = captured[i];
        if (!cap) throw new Error(`arank: layer ${i} did not expose its queries`);
        const [, H, , Dh] = cap.q.shape;
        const KV = cap.k.shape[1];
        for (let h = 0; h < H; h++) {
          const kh = Math.floor(h / (H / KV)); // GQA: query head h reads key head h / (H / KV)
          const q = cap.q.data.subarray(h * Tn * Dh, (h + 1) * Tn * Dh);
          const k = cap.k.data.subarray(kh * Tn * Dh, (kh + 1) * Tn * Dh);
          sums[i][h] += numericalRank(causalAttentionMap(q, k, Tn, Dh), Tn, Tn, tol);
        }
      }
    }
  } finally {
    layers.forEach((l) => delete (l.self_attn as Partial<Attention>).forward);
    if (wasTraining) model.train();
  }
  return sums.map((s, layer) => {
    const per = Array.from(s, (x) => x / sequences.length);
    return { layer, arank: per.reduce((a, b) => a + b, 0) / per.length, heads: per };
  });
}

/**
 * γ-MoD's layer choice: the `count` layers of lowest ARank (ties: the later layer), in ascending
 * layer order.
 */
export function lowestARankLayers(ranks: readonly LayerARank[], count: number): number[] {
  if (!Number.isInteger(count) || count < 1 || count > ranks.length) throw new ConfigError(`arank layers must be an integer in [1, ${ranks.length}], got ${count}`);
  return [...ranks]
    .sort((a, b) => a.arank - b.arank || b.layer - a.layer)
    .slice(0, count)
    .map((r) => r.layer)
    .sort((a, b) => a - b);
}
