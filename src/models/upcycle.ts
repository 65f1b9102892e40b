/**
 * Building an MoE from dense models, as pure model transforms (no training, no files):
 * - sparse upcycling: every expert a copy of the dense FFN, a new router (Komatsuzaki et al.,
 *   "Sparse Upcycling: Training Mixture-of-Experts from Dense Checkpoints", 2022);
 * - FFN splitting: the dense FFN's neurons partitioned into experts, at random or clustered by
 *   their activations on calibration text (Zhu et al., "LLaMA-MoE: Building Mixture-of-Experts
 *   from LLaMA with Continual Pre-training", 2023; Zhang et al., "MoEfication", 2022), the most
 *   active neurons forming shared experts (Pei et al., "CMoE: Fast Carving of Mixture-of-Experts
 *   for Efficient LLM Inference", 2025);
 * - Branch-Train-MiX: the FFNs of several dense models of one architecture become one expert
 *   each, the other weights averaged (Sukhbaatar et al., "Branch-Train-MiX: Mixing Expert LLMs
 *   into a Mixture-of-Experts LLM", 2024).
 */
import { noGrad } from '../tensor/tensor.js';
import * as T from '../tensor/index.js';
import { Rng } from '../tensor/random.js';
import type { FFNExperts, SharedExperts } from '../moe/experts/ffn.js';
import { MoETransformerLM, type DenseFFN } from './transformer.js';
import { parseModelConfig, ConfigError, type ModelConfig } from './config.js';

/** Options shared by the transforms: the new MoE's routing. */
export interface UpcycleRouting {
  /** Experts per token (default 2, at most the number of experts). */
  topK?: number;
  /** A routerRegistry name (default topk, whose renormalised weights make copies sum to the dense FFN). */
  router?: string;
  routerOptions?: Record<string, unknown>;
  /** Seed of the new router's init (and of noise / random splits). */
  seed?: number;
}

/** Sparse upcycling options. */
export interface UpcycleOptions extends UpcycleRouting {
  numExperts: number;
  /** Gaussian noise on each copied expert weight, as a fraction of that weight tensor's std (0: exact copies). */
  noise?: number;
}

/** FFN splitting options. */
export interface SplitOptions extends UpcycleRouting {
  /** Routed experts the remaining neurons are split into. */
  numExperts: number;
  /** Shared experts (each as wide as a routed one) taken from the most active neurons (CMoE); default 0. */
  sharedExperts?: number;
  /** 'random': a seeded permutation; 'clustered': balanced k-means on activation profiles (needs calibration). */
  method?: 'random' | 'clustered';
  /** Calibration windows of token ids (each at most max_position_embeddings long); required by 'clustered' and by shared experts. */
  calibration?: Int32Array[];
}

/** Which dense neurons each expert of each layer got (splitting), for reports and tests. */
export interface SplitPlan {
  /** plan[layer].experts[e]: neuron indices of routed expert e; .shared: the shared experts' neurons, in order. */
  layers: { experts: number[][]; shared: number[] }[];
}

function fail(where: string, msg: string): never {
  throw new ConfigError(`${where}: ${msg}`);
}

function checkRouting(where: string, E: number, o: UpcycleRouting): number {
  if (!Number.isInteger(E) || E < 1) fail(where, `numExperts must be a positive integer, got ${E}`);
  const k = o.topK ?? Math.min(2, E);
  if (!Number.isInteger(k) || k < 1 || k > E) fail(where, `topK must be an integer in [1, numExperts=${E}], got ${k}`);
  return k;
}

/** The dense FFN of every layer; fails on a model that already has MoE layers. */
function denseFFNs(model: MoETransformerLM, where: string): DenseFFN[] {
  return model.layers.map((l, i) => {
    if (!l.mlp || l.block_sparse_moe || l.shared_expert) fail(where, `layer ${i} is not a dense FFN layer (the source must be a dense model, num_local_experts 0)`);
    if (l.mlp.up_proj.bias || l.mlp.down_proj.bias || l.mlp.gate_proj?.bias) fail(where, `layer ${i}: FFN projections with biases are not supported`);
    return l.mlp;
  });
}

/** The MoE config: the dense one with every FFN layer an MoE of E experts of width fe (+ shared). */
function moeConfig(c: ModelConfig, E: number, k: number, fe: number, o: UpcycleRouting, shared = 0): ModelConfig {
  return parseModelConfig(
    {
      ...c,
      num_local_experts: E,
      num_experts_per_tok: k,
      moe_intermediate_size: fe,
      n_shared_experts: shared,
      shared_expert_intermediate_size: shared > 0 ? fe : undefined,
      shared_expert_gate: false,
      decoder_sparse_step: 1,
      first_k_dense_replace: 0,
      mlp_only_layers: [],
      expert_sizes: undefined,
      expert_type: undefined,
      expert_options: {},
      router_type: o.router ?? 'topk',
      router_options: o.routerOptions ?? {},
      norm_topk_prob: true,
      dispatch: undefined,
      capacity_factor: undefined,
    },
    'upcycled model config',
  );
}

/** A fresh MoE of config `c` with every non-FFN tensor (embeddings, attention, norms, head) averaged over `sources`. */
function moeWithSharedWeights(c: ModelConfig, sources: MoETransformerLM[], seed: number): MoETransformerLM {
  const moe = new MoETransformerLM(c, seed);
  const dst = moe.stateDict();
  const srcs = sources.map((s) => s.stateDict());
  for (const [name, t] of dst) {
    if (name.includes('.mlp.') || name.includes('block_sparse_moe')) continue;
    const from = srcs.map((s) => s.get(name));
    if (from.some((f) => !f || f.data.length !== t.data.length)) fail('upcycle', `tensor ${name} of the MoE has no counterpart of the same size in the dense model`);
    if (from.length === 1) t.data.set(from[0]!.data);
    else for (let i = 0; i < t.data.length; i++) t.data[i] = from.reduce((s, f) => s + f!.data[i], 0) / from.length;
  }
  return moe.train(sources[0].training);
}

/**
 * Write dense neurons `idx` of `ffn` into expert `e` of a stacked bank laid out [E, d, f] / [E, f, d]
 * (FFNExperts) or into columns `[off, off + idx.length)` of a shared bank [d, h] / [h, d].
 */
function writeNeurons(ffn: DenseFFN, idx: readonly number[], dst: { w1: Float32Array; w3: Float32Array | null; w2: Float32Array }, base1: number, stride: number, col: number, base2: number): void {
  const d = ffn.up_proj.inFeatures;
  const f = ffn.up_proj.outFeatures;
  // Linear weights are [out, in]: gate/up [f, d], down [d, f]
  const first = ffn.gate_proj ? ffn.gate_proj.weight.data : ffn.up_proj.weight.data;
  const value = ffn.gate_proj ? ffn.up_proj.weight.data : null;
  const down = ffn.down_proj.weight.data;
  idx.forEach((n, j) => {
    for (let i = 0; i < d; i++) {
      dst.w1[base1 + i * stride + col + j] = first[n * d + i];
      if (dst.w3 && value) dst.w3[base1 + i * stride + col + j] = value[n * d + i];
      dst.w2[base2 + (col + j) * d + i] = down[i * f + n];
    }
  });
}

function addNoise(a: Float32Array, frac: number, rng: Rng): void {
  if (frac <= 0) return;
  let s = 0;
  let s2 = 0;
  for (const v of a) {
    s += v;
    s2 += v * v;
  }
  const std = Math.sqrt(Math.max(0, s2 / a.length - (s / a.length) ** 2));
  const z = rng.fillNormal(new Float32Array(a.length), frac * std);
  for (let i = 0; i < a.length; i++) a[i] += z[i];
}

function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}

/**
 * Sparse upcycling: an MoE whose every layer has `numExperts` copies of the dense FFN (plus
 * optional seeded noise) behind a new router. Without noise and with renormalised top-k weights
 * (the default topk router) its outputs equal the dense model's; continued training then lets the
 * copies diverge.
 */
export function upcycleDense(dense: MoETransformerLM, opts: UpcycleOptions): MoETransformerLM {
  const where = 'upcycle';
  const E = opts.numExperts;
  const k = checkRouting(where, E, opts);
  const noise = opts.noise ?? 0;
  if (!Number.isFinite(noise) || noise < 0) fail(where, `noise must be a finite number >= 0, got ${noise}`);
  const ffns = denseFFNs(dense, where);
  const f = dense.config.intermediate_size;
  const seed = opts.seed ?? 0;
  const moe = moeWithSharedWeights(moeConfig(dense.config, E, k, f, opts), [dense], seed);
  const rng = new Rng(seed ^ 0x5eed);
  const all = range(f);
  moe.layers.forEach((l, li) => {
    const bank = l.block_sparse_moe!.experts as FFNExperts;
    const d = bank.dModel;
    for (let e = 0; e < E; e++) writeNeurons(ffns[li], all, { w1: bank.w1.data, w3: bank.w3?.data ?? null, w2: bank.w2.data }, e * d * f, f, 0, e * f * d);
    for (const w of [bank.w1, bank.w3, bank.w2]) if (w) for (let e = 0; e < E && noise > 0; e++) addNoise(w.data.subarray((e * w.size) / E, ((e + 1) * w.size) / E), noise, rng);
  });
  return moe;
}

/** FFN inputs of every layer on the calibration windows: rows [N, d] per layer (forward with the mlp inputs captured). */
function calibrationInputs(model: MoETransformerLM, windows: Int32Array[], where: string): Float32Array[][] {
  if (windows.length === 0) fail(where, 'calibration needs at least one window of token ids');
  const captured: Float32Array[][] = model.layers.map(() => []);
  const restore = model.layers.map((l, i) => {
    const mlp = l.mlp!;
    const orig = mlp.forward.bind(mlp);
    mlp.forward = (x) => {
      captured[i].push(x.data.slice());
      return orig(x);
    };
    return () => {
      mlp.forward = orig;
    };
  });
  try {
    noGrad(() => {
      for (const w of windows) {
        if (w.length < 1 || w.length > model.config.max_position_embeddings)
          fail(where, `calibration window of ${w.length} tokens must hold 1..max_position_embeddings (${model.config.max_position_embeddings}) tokens`);
        model.forward(w, 1, w.length, { ctx: { training: false, step: 0, rng: new Rng(0) } });
      }
    });
  } finally {
    restore.forEach((r) => r());
  }
  return captured;
}

/** Hidden activations [N, f] of one dense FFN on inputs rows (the values its down projection reads). */
function ffnActivations(ffn: DenseFFN, rows: Float32Array[]): { a: Float32Array; n: number } {
  const d = ffn.up_proj.inFeatures;
  let n = 0;
  for (const r of rows) n += r.length / d;
  const x = new Float32Array(n * d);
  let o = 0;
  for (const r of rows) {
    x.set(r, o);
    o += r.length;
  }
  return noGrad(() => {
    const xt = T.tensor(x, [n, d]);
    const up = ffn.up_proj.forward(xt);
    const h = ffn.gate_proj ? T.swiglu(ffn.gate_proj.forward(xt), up) : T.geluFused(up);
    return { a: h.data.slice(), n };
  });
}

/**
 * CMoE's activation rate: the share of tokens on which a neuron is among that token's most
 * strongly activated 10%. Neurons with the highest rates become the shared experts.
 */
export function activationRates(a: Float32Array, n: number, f: number): Float64Array {
  const top = Math.max(1, Math.ceil(f / 10));
  const rate = new Float64Array(f);
  const mag = new Float32Array(f);
  for (let t = 0; t < n; t++) {
    for (let j = 0; j < f; j++) mag[j] = Math.abs(a[t * f + j]);
    const thr = Float32Array.from(mag).sort()[f - top];
    for (let j = 0; j < f; j++) if (mag[j] >= thr) rate[j] += 1 / n;
  }
  return rate;
}

/**
 * Balanced k-means of the given neurons into E clusters of equal size on their activation profiles
 * (|activation| over calibration tokens, centred and unit-normalised, so neurons that fire on the
 * same tokens share an expert). Assignment is greedy by distance under the size cap.
 */
export function clusterNeurons(a: Float32Array, n: number, f: number, neurons: readonly number[], E: number, rng: Rng, iterations = 10): number[][] {
  const m = neurons.length;
  const size = m / E;
  const feat = neurons.map((j) => {
    const v = new Float64Array(n);
    let mean = 0;
    for (let t = 0; t < n; t++) mean += Math.abs(a[t * f + j]) / n;
    let norm = 0;
    for (let t = 0; t < n; t++) {
      v[t] = Math.abs(a[t * f + j]) - mean;
      norm += v[t] * v[t];
    }
    norm = Math.sqrt(norm) || 1;
    for (let t = 0; t < n; t++) v[t] /= norm;
    return v;
  });
  // k-means++ seeding
  const cent: Float64Array[] = [Float64Array.from(feat[rng.int(m)])];
  const dist = (x: Float64Array, c: Float64Array): number => {
    let s = 0;
    for (let t = 0; t < n; t++) s += (x[t] - c[t]) ** 2;
    return s;
  };
  while (cent.length < E) {
    const dmin = feat.map((x) => Math.min(...cent.map((c) => dist(x, c))));
    const total = dmin.reduce((s, v) => s + v, 0);
    let r = rng.next() * total;
    let pick = 0;
    while (pick < m - 1 && r > dmin[pick]) r -= dmin[pick++];
    cent.push(Float64Array.from(feat[pick]));
  }
  let groups: number[][] = [];
  for (let it = 0; it < iterations; it++) {
    const pairs: [number, number, number][] = [];
    for (let i = 0; i < m; i++) for (let c = 0; c < E; c++) pairs.push([dist(feat[i], cent[c]), i, c]);
    pairs.sort((p, q) => p[0] - q[0] || p[1] - q[1] || p[2] - q[2]);
    const owner = new Int32Array(m).fill(-1);
    groups = Array.from({ length: E }, () => []);
    for (const [, i, c] of pairs) {
      if (owner[i] >= 0 || groups[c].length >= size) continue;
      owner[i] = c;
      groups[c].push(i);
    }
    for (let c = 0; c < E; c++) {
      const mean = new Float64Array(n);
      for (const i of groups[c]) for (let t = 0; t < n; t++) mean[t] += feat[i][t] / groups[c].length;
      cent[c] = mean;
    }
  }
  return groups.map((g) => g.map((i) => neurons[i]).sort((x, y) => x - y));
}

/**
 * FFN splitting: each layer's dense neurons partitioned into `sharedExperts` shared experts (the
 * neurons with the highest activation rates on the calibration text, CMoE) and `numExperts`
 * routed experts of equal width (random, or clustered by activation profile). Shared experts plus
 * the sum of all routed experts compute exactly the dense FFN; routing to k of them (with the
 * router's weights) is the approximation continued training repairs.
 */
export function splitDense(dense: MoETransformerLM, opts: SplitOptions): { model: MoETransformerLM; plan: SplitPlan } {
  const where = 'upcycle --split';
  const E = opts.numExperts;
  const k = checkRouting(where, E, opts);
  const S = opts.sharedExperts ?? 0;
  if (!Number.isInteger(S) || S < 0) fail(where, `sharedExperts must be an integer >= 0, got ${S}`);
  const method = opts.method ?? 'random';
  if (method !== 'random' && method !== 'clustered') fail(where, `method must be random or clustered, got ${String(method)}`);
  const ffns = denseFFNs(dense, where);
  const f = dense.config.intermediate_size;
  if (f % (E + S) !== 0) fail(where, `intermediate_size ${f} must be divisible by numExperts + sharedExperts (${E + S}) so all experts have one width`);
  const fe = f / (E + S);
  if ((method === 'clustered' || S > 0) && !opts.calibration) fail(where, `${method === 'clustered' ? 'method clustered' : 'shared experts'} need calibration text`);
  const seed = opts.seed ?? 0;
  const rng = new Rng(seed ^ 0x5917);
  const inputs = opts.calibration && (method === 'clustered' || S > 0) ? calibrationInputs(dense, opts.calibration, where) : null;
  const plan: SplitPlan = { layers: [] };
  for (let li = 0; li < ffns.length; li++) {
    let shared: number[] = [];
    let rest = range(f);
    const act = inputs ? ffnActivations(ffns[li], inputs[li]) : null;
    if (S > 0 && act) {
      const rate = activationRates(act.a, act.n, f);
      const order = range(f).sort((x, y) => rate[y] - rate[x] || x - y);
      shared = order.slice(0, S * fe).sort((x, y) => x - y);
      const taken = new Set(shared);
      rest = rest.filter((j) => !taken.has(j));
    }
    let experts: number[][];
    if (method === 'clustered' && act) experts = clusterNeurons(act.a, act.n, f, rest, E, rng);
    else {
      const perm = rest.slice();
      for (let i = perm.length - 1; i > 0; i--) {
        const j = rng.int(i + 1);
        [perm[i], perm[j]] = [perm[j], perm[i]];
      }
      experts = range(E).map((e) => perm.slice(e * fe, (e + 1) * fe).sort((x, y) => x - y));
    }
    plan.layers.push({ experts, shared });
  }
  const moe = moeWithSharedWeights(moeConfig(dense.config, E, k, fe, opts, S), [dense], seed);
  moe.layers.forEach((l, li) => {
    const layer = l.block_sparse_moe!;
    const bank = layer.experts as FFNExperts;
    const d = bank.dModel;
    plan.layers[li].experts.forEach((idx, e) => writeNeurons(ffns[li], idx, { w1: bank.w1.data, w3: bank.w3?.data ?? null, w2: bank.w2.data }, e * d * fe, fe, 0, e * fe * d));
    const sh = layer.shared as SharedExperts | null;
    if (sh) writeNeurons(ffns[li], plan.layers[li].shared, { w1: sh.w1.data, w3: sh.w3?.data ?? null, w2: sh.w2.data }, 0, S * fe, 0, 0);
  });
  return { model: moe, plan };
}

/**
 * Branch-Train-MiX: dense models of one architecture (e.g. copies of one seed model each trained
 * on its own domain) into one MoE with expert e = model e's FFN in every layer; embeddings,
 * attention, norms and head are averaged; the router is new.
 */
export function mixDenseModels(models: MoETransformerLM[], opts: UpcycleRouting = {}): MoETransformerLM {
  const where = 'upcycle --mix';
  if (models.length < 2) fail(where, `needs at least 2 dense models, got ${models.length}`);
  const E = models.length;
  const k = checkRouting(where, E, opts);
  const ffns = models.map((m) => denseFFNs(m, where));
  const c0 = JSON.stringify({ ...models[0].config });
  models.forEach((m, i) => {
    if (JSON.stringify({ ...m.config }) !== c0) fail(where, `model ${i} has a different config from model 0 (Branch-Train-MiX needs one architecture)`);
  });
  const f = models[0].config.intermediate_size;
  const moe = moeWithSharedWeights(moeConfig(models[0].config, E, k, f, opts), models, opts.seed ?? 0);
  const all = range(f);
  moe.layers.forEach((l, li) => {
    const bank = l.block_sparse_moe!.experts as FFNExperts;
    const d = bank.dModel;
    for (let e = 0; e < E; e++) writeNeurons(ffns[e][li], all, { w1: bank.w1.data, w3: bank.w3?.data ?? null, w2: bank.w2.data }, e * d * f, f, 0, e * f * d);
  });
  return moe;
}

/**
 * BAM attention upcycling (BAM! Just Like That: Simple and Efficient Parameter Upcycling for
 * Mixture of Experts, 2024): every layer's attention becomes a soft mixture of `experts` full
 * attention experts (attention_type 'bam'). Expert e copies the attention of `sources[e]` (several
 * dense models, Branch-Train-MiX style) or, by default, of `model` itself; everything else is
 * `model`'s. The router starts at zero (uniform weights), so with copies of one attention the
 * upcycled model computes exactly what `model` computes.
 */
export function upcycleAttention(model: MoETransformerLM, experts: number, sources?: MoETransformerLM[]): MoETransformerLM {
  const where = 'upcycle --attention-experts';
  if (!Number.isInteger(experts) || experts < 1) fail(where, `experts must be a positive integer, got ${experts}`);
  const c = model.config;
  const kind = c.attention_type ?? (c.kv_lora_rank !== undefined ? 'mla' : 'standard');
  if (kind !== 'standard') fail(where, `the source attention must be standard multi-head attention, got attention_type "${kind}"`);
  if (sources && sources.length !== experts) fail(where, `one source model per attention expert: ${experts} experts, ${sources.length} models`);
  const out = new MoETransformerLM(parseModelConfig({ ...c, attention_type: 'bam', attention_options: { experts } }, 'BAM model config'), 0);
  const own = model.stateDict();
  const srcs = (sources ?? [model]).map((s) => s.stateDict());
  for (const [name, t] of out.stateDict()) {
    const m = /^layers\.(\d+)\.self_attn\.(experts\.(\d+)\.|router\.)(.*)$/.exec(name);
    if (m && m[2] === 'router.') continue; // zero init: uniform mixture
    const from = m ? `layers.${m[1]}.self_attn.${m[4]}` : name;
    const s = (m ? srcs[sources ? Number(m[3]) : 0] : own).get(from);
    if (!s || s.data.length !== t.data.length) fail(where, `tensor ${name} has no counterpart ${from} of the same size in the source model`);
    t.data.set(s.data);
  }
  return out.train(model.training);
}
