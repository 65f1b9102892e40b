/**
 * Expert merging as pure model transforms (no data, no files):
 * - groups of experts averaged into one expert each, with weights (e.g. router usage), every
 *   per-expert tensor of the layer (expert weights, router rows, per-expert router state) merged
 *   the same way (Experts Weights Averaging: A New General Training Scheme for Vision
 *   Transformers, 2023; Merging Multi-Task Models via Weight-Ensembling Mixture of Experts, 2024;
 *   the usage-led grouping follows Merge, Then Compress (MC-SMoE), 2023);
 * - an MoE back to a dense model: each layer's FFN the weighted average of its experts, shared
 *   experts kept as extra neurons (Upcycling Instruction Tuning via Parameter Merging, 2024; the
 *   same average is the knowledge-gathering init of src/adapt/distill.ts).
 * Averaging identical experts returns them unchanged, so a model whose experts are all equal
 * (fresh from sparse upcycling) computes the same function after either merge.
 */
import { MoETransformerLM } from './transformer.js';
import { parseModelConfig, ConfigError } from './config.js';
import { FFNExperts, SharedExperts } from '../moe/experts/ffn.js';

function fail(msg: string): never {
  throw new ConfigError(`merge: ${msg}`);
}

const PER_EXPERT = /^layers\.(\d+)\.block_sparse_moe\.(experts|router)\./;

function moeLayerIndices(model: MoETransformerLM): number[] {
  const moe = model.layers.flatMap((l, i) => (l.block_sparse_moe ? [i] : []));
  if (moe.length === 0) fail('the model has no MoE layers');
  return moe;
}

/** Per MoE layer, each expert's weight normalised within its group (uniform where weights are absent or sum to 0). */
function groupCoefficients(group: number[], w: ArrayLike<number> | undefined): number[] {
  const raw = group.map((e) => (w ? Math.max(0, w[e]) : 1));
  const s = raw.reduce((a, b) => a + b, 0);
  return s > 0 ? raw.map((v) => v / s) : group.map(() => 1 / group.length);
}

/**
 * Merge each MoE layer's experts into `groups[l].length` experts: merged expert g is the weighted
 * average of experts groups[l][g] (weights[l][e], normalised within the group; default uniform),
 * and so is its router row. Every layer must give the same number of groups and each expert must
 * be in exactly one group. Experts per token become min(k, groups).
 */
export function mergeExperts(model: MoETransformerLM, groups: number[][][], weights?: ArrayLike<number>[]): MoETransformerLM {
  const c = model.config;
  const E = c.num_local_experts;
  const moe = moeLayerIndices(model);
  if (groups.length !== moe.length) fail(`groups needs one grouping per MoE layer (${moe.length}), got ${groups.length}`);
  if (weights && weights.length !== moe.length) fail(`weights needs one list per MoE layer (${moe.length}), got ${weights.length}`);
  const G = groups[0].length;
  groups.forEach((gs, l) => {
    if (gs.length !== G) fail(`every MoE layer must merge into the same number of experts (layer ${moe[l]}: ${gs.length}, the first: ${G})`);
    const seen = gs.flat();
    if (gs.some((g) => g.length === 0) || seen.length !== E || new Set(seen).size !== E || seen.some((e) => !Number.isInteger(e) || e < 0 || e >= E))
      fail(`layer ${moe[l]} groups must partition the experts 0..${E - 1} into non-empty groups, got ${JSON.stringify(gs)}`);
  });
  if (c.expert_sizes) fail('heterogeneous expert widths (expert_sizes) are not supported');
  const cfg = parseModelConfig({ ...c, num_local_experts: G, num_experts_per_tok: Math.min(c.num_experts_per_tok, G) }, 'merged model config');
  const out = new MoETransformerLM(cfg, 0);
  const src = model.stateDict();
  for (const [name, t] of out.stateDict()) {
    const s = src.get(name);
    if (!s) fail(`tensor ${name} has no counterpart in the source model`);
    const m = PER_EXPERT.exec(name);
    const li = m ? moe.indexOf(Number(m[1])) : -1;
    if (li >= 0 && s.shape[0] === E && t.shape[0] === G) {
      const per = s.data.length / E;
      groups[li].forEach((g, gi) => {
        const coef = groupCoefficients(g, weights?.[li]);
        for (let i = 0; i < per; i++) {
          let v = 0;
          g.forEach((e, j) => (v += coef[j] * s.data[e * per + i]));
          t.data[gi * per + i] = v;
        }
      });
      continue;
    }
    if (s.data.length !== t.data.length) fail(`tensor ${name} [${s.shape.join(', ')}] has no leading expert axis to merge`);
    t.data.set(s.data);
  }
  return out.train(model.training);
}

/** Cosine similarity of two experts' flattened weights (every per-expert expert tensor of the layer). */
function expertVectors(model: MoETransformerLM, layer: number): Float64Array[] {
  const E = model.config.num_local_experts;
  const parts = [...model.stateDict()].filter(([n, t]) => n.startsWith(`layers.${layer}.block_sparse_moe.experts.`) && t.shape[0] === E);
  const size = parts.reduce((s, [, t]) => s + t.data.length / E, 0);
  return Array.from({ length: E }, (_, e) => {
    const v = new Float64Array(size);
    let o = 0;
    for (const [, t] of parts) {
      const per = t.data.length / E;
      for (let i = 0; i < per; i++) v[o + i] = t.data[e * per + i];
      o += per;
    }
    return v;
  });
}

function cosine(a: Float64Array, b: Float64Array): number {
  let ab = 0;
  let aa = 0;
  let bb = 0;
  for (let i = 0; i < a.length; i++) {
    ab += a[i] * b[i];
    aa += a[i] * a[i];
    bb += b[i] * b[i];
  }
  return aa > 0 && bb > 0 ? ab / Math.sqrt(aa * bb) : aa === bb ? 1 : 0;
}

/**
 * Groups of experts per MoE layer, `n` per layer:
 * - 'similarity': average-linkage agglomerative clustering on the cosine similarity of the experts' weights;
 * - 'usage': the n most used experts (by `usage[l][e]`) lead a group each and every other expert joins
 *   the leader its weights are most similar to (MC-SMoE's grouping).
 * Groups are listed by their smallest expert, members ascending.
 */
export function groupExperts(model: MoETransformerLM, n: number, by: 'similarity' | 'usage', usage?: ArrayLike<number>[]): number[][][] {
  const E = model.config.num_local_experts;
  if (!Number.isInteger(n) || n < 1 || n > E) fail(`the merged expert count must be an integer in [1, ${E}], got ${n}`);
  const moe = moeLayerIndices(model);
  if (by === 'usage' && (!usage || usage.length !== moe.length)) fail(`grouping by usage needs one usage list per MoE layer (${moe.length})`);
  return moe.map((layer, l) => {
    const vec = expertVectors(model, layer);
    const sim = vec.map((a) => vec.map((b) => cosine(a, b)));
    let groups: number[][];
    if (by === 'usage') {
      const u = usage![l];
      const leaders = Array.from({ length: E }, (_, e) => e)
        .sort((a, b) => u[b] - u[a] || a - b)
        .slice(0, n);
      groups = leaders.map((e) => [e]);
      for (let e = 0; e < E; e++) {
        if (leaders.includes(e)) continue;
        let best = 0;
        leaders.forEach((x, i) => {
          if (sim[e][x] > sim[e][leaders[best]]) best = i;
        });
        groups[best].push(e);
      }
    } else {
      groups = Array.from({ length: E }, (_, e) => [e]);
      const link = (a: number[], b: number[]): number => a.reduce((s, i) => s + b.reduce((t, j) => t + sim[i][j], 0), 0) / (a.length * b.length);
      while (groups.length > n) {
        let bi = 0;
        let bj = 1;
        let best = -Infinity;
        for (let i = 0; i < groups.length; i++)
          for (let j = i + 1; j < groups.length; j++) {
            const s = link(groups[i], groups[j]);
            if (s > best) [best, bi, bj] = [s, i, j];
          }
        groups[bi] = [...groups[bi], ...groups[bj]];
        groups.splice(bj, 1);
      }
    }
    return groups.map((g) => [...g].sort((a, b) => a - b)).sort((a, b) => a[0] - b[0]);
  });
}

/**
 * An MoE back to a dense model: in every MoE layer the dense FFN is the weighted average of the
 * experts (weights[l][e], normalised; default uniform) with the shared experts' neurons appended
 * (intermediate_size = expert width + shared width). FFN experts (w1/w3/w2) without per-layer
 * extras only; any dense layers must already have that width.
 */
export function mergeToDense(model: MoETransformerLM, weights?: ArrayLike<number>[]): MoETransformerLM {
  const c = model.config;
  const E = c.num_local_experts;
  const moe = moeLayerIndices(model);
  if (weights && weights.length !== moe.length) fail(`weights needs one list per MoE layer (${moe.length}), got ${weights.length}`);
  if (c.expert_sizes) fail('heterogeneous expert widths (expert_sizes) are not supported');
  if (c.moe_sub_tokens !== undefined && c.moe_sub_tokens > 1) fail('MH-MoE sub-tokens (moe_sub_tokens) have no dense equivalent');
  if (c.moe_output_bias || c.shared_expert_gate) fail('MoE output biases and gated shared experts are not supported');
  if (c.conditional_moe_routing) fail('conditional MoE routing (a gated dense branch beside the MoE) is not supported');
  const first = model.layers[moe[0]].block_sparse_moe!;
  if (!(first.experts instanceof FFNExperts)) fail(`expert type "${first.specs.experts.name}" is not a plain FFN bank (w1, w3, w2)`);
  const fe = first.experts.dFF;
  const sharedWidth = first.shared instanceof SharedExperts ? first.shared.count * first.shared.dFF : 0;
  if (first.shared && !(first.shared instanceof SharedExperts)) fail('shared experts of another form are not supported');
  const f = fe + sharedWidth;
  model.layers.forEach((l, i) => {
    if (l.mlp && l.mlp.up_proj.outFeatures !== f) fail(`dense layer ${i} has width ${l.mlp.up_proj.outFeatures}, the merged FFN ${f}: one dense width is needed`);
  });
  const cfg = parseModelConfig(
    {
      ...c,
      num_local_experts: 0,
      intermediate_size: f,
      n_shared_experts: 0,
      shared_expert_intermediate_size: undefined,
      router_type: 'topk',
      router_options: {},
      expert_type: undefined,
      expert_options: {},
      dispatch: undefined,
      capacity_factor: undefined,
    },
    'dense model config',
  );
  const out = new MoETransformerLM(cfg, 0);
  const src = model.stateDict();
  for (const [name, t] of out.stateDict()) {
    if (name.includes('.mlp.') && model.layers[Number(/^layers\.(\d+)\./.exec(name)![1])].block_sparse_moe) continue;
    const s = src.get(name);
    if (!s || s.data.length !== t.data.length) fail(`tensor ${name} has no counterpart of the same size in the MoE model`);
    t.data.set(s.data);
  }
  moe.forEach((li, l) => {
    const layer = model.layers[li].block_sparse_moe!;
    const bank = layer.experts;
    if (!(bank instanceof FFNExperts) || bank.dFF !== fe) fail(`layer ${li}: experts must be FFN experts of width ${fe}`);
    const mlp = out.layers[li].mlp!;
    const d = c.hidden_size;
    const coef = groupCoefficients(
      Array.from({ length: E }, (_, e) => e),
      weights?.[l],
    );
    // Linear weights are [out, in]: gate/up [f, d] from w1/w3 [E, d, fe], down [d, f] from w2 [E, fe, d]
    const firstW = mlp.gate_proj ? mlp.gate_proj.weight.data : mlp.up_proj.weight.data;
    const valueW = mlp.gate_proj ? mlp.up_proj.weight.data : null;
    const down = mlp.down_proj.weight.data;
    const w1 = bank.w1.data;
    const w3 = bank.w3?.data ?? null;
    const w2 = bank.w2.data;
    for (let j = 0; j < fe; j++)
      for (let i = 0; i < d; i++) {
        let a = 0;
        let b = 0;
        let o = 0;
        for (let e = 0; e < E; e++) {
          a += coef[e] * w1[e * d * fe + i * fe + j];
          if (w3) b += coef[e] * w3[e * d * fe + i * fe + j];
          o += coef[e] * w2[e * fe * d + j * d + i];
        }
        firstW[j * d + i] = a;
        if (valueW) valueW[j * d + i] = b;
        down[i * f + j] = o;
      }
    const sh = layer.shared as SharedExperts | null;
    if (sh) {
      const h = sh.count * sh.dFF;
      for (let j = 0; j < h; j++)
        for (let i = 0; i < d; i++) {
          firstW[(fe + j) * d + i] = sh.w1.data[i * h + j];
          if (valueW && sh.w3) valueW[(fe + j) * d + i] = sh.w3.data[i * h + j];
          down[i * f + fe + j] = sh.w2.data[j * d + i];
        }
    }
  });
  return out.train(model.training);
}
