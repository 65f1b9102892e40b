/**
 * Inspecting a trained MoE's experts, after A Closer Look into Mixture-of-Experts in Large
 * Language Models (2024) and Evaluating Expert Contributions in a MoE LLM for Quiz-Based Tasks
 * (2024): expert weight similarity, expert output norms, routing agreement across layers,
 * per-domain expert usage, each expert's contribution to the loss (forbid it, re-evaluate), per-
 * token routing traces, and which experts change the next-token distribution on given prompts
 * (Mixture of Tunable Experts, 2025). The numbers only: `moe-ts analyze` renders them.
 */
import { Tensor, noGrad } from '../tensor/tensor.js';
import { Rng } from '../tensor/random.js';
import type { ExpertBank, MoEAux, RouterOutput } from '../moe/types.js';
import type { RoutingOverride } from '../moe/override.js';
import { tokenExperts } from '../moe/trace.js';
import type { MoETransformerLM } from '../models/transformer.js';
import type { MixedDataset } from '../data/dataset.js';
import type { Tokenizer } from '../data/tokenizer/index.js';
import type { TokenRouting } from '../infer/generate.js';
import { moeLayerIndices, setRoutingOverrides, withExpertOverrides } from '../infer/steer.js';
import { evaluate } from '../train/evaluate.js';

/** Each expert's parameters flattened into one vector: the bank's parameters whose first axis is the expert axis. */
export function expertWeightVectors(bank: ExpertBank): Float64Array[] {
  const E = bank.numExperts;
  const ps = bank.namedParameters().filter(([, p]) => p.shape.length >= 2 && p.shape[0] === E);
  if (!ps.length) throw new Error(`expertWeightVectors: the expert bank has no parameter with a leading expert axis of ${E}`);
  const per = ps.reduce((n, [, p]) => n + p.size / E, 0);
  return Array.from({ length: E }, (_, e) => {
    const v = new Float64Array(per);
    let o = 0;
    for (const [, p] of ps) {
      const n = p.size / E;
      for (let i = 0; i < n; i++) v[o + i] = p.data[e * n + i];
      o += n;
    }
    return v;
  });
}

/** Cosine similarity of every pair of vectors (0 where a vector is all zeros). */
export function cosineMatrix(vs: readonly ArrayLike<number>[]): number[][] {
  const norm = vs.map((v) => {
    let s = 0;
    for (let i = 0; i < v.length; i++) s += v[i] * v[i];
    return Math.sqrt(s);
  });
  return vs.map((a, i) =>
    vs.map((b, j) => {
      if (norm[i] === 0 || norm[j] === 0) return 0;
      let s = 0;
      for (let k = 0; k < a.length; k++) s += a[k] * b[k];
      return Math.max(-1, Math.min(1, s / (norm[i] * norm[j])));
    }),
  );
}

/**
 * Normalised mutual information of two labelings of the same tokens (labels < 0 skipped):
 * I(A; B) / sqrt(H(A) H(B)), 1 when each determines the other, 0 when independent
 * (0 too when either is constant).
 */
export function normalizedMutualInformation(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`normalizedMutualInformation: ${a.length} labels vs ${b.length}`);
  const joint = new Map<string, number>();
  const ca = new Map<number, number>();
  const cb = new Map<number, number>();
  let n = 0;
  for (let i = 0; i < a.length; i++) {
    if (a[i] < 0 || b[i] < 0) continue;
    n++;
    joint.set(`${a[i]},${b[i]}`, (joint.get(`${a[i]},${b[i]}`) ?? 0) + 1);
    ca.set(a[i], (ca.get(a[i]) ?? 0) + 1);
    cb.set(b[i], (cb.get(b[i]) ?? 0) + 1);
  }
  if (n === 0) return 0;
  const H = (c: Map<number, number>) => [...c.values()].reduce((s, k) => s - (k / n) * Math.log(k / n), 0);
  const ha = H(ca);
  const hb = H(cb);
  if (ha <= 1e-12 || hb <= 1e-12) return 0;
  let mi = 0;
  for (const [key, k] of joint) {
    const [x, y] = key.split(',').map(Number);
    mi += (k / n) * Math.log((k * n) / (ca.get(x)! * cb.get(y)!));
  }
  return Math.max(0, Math.min(1, mi / Math.sqrt(ha * hb)));
}

/** Records each call's router input and routing without changing them (an override that is the identity). */
class RoutingProbe implements RoutingOverride {
  readonly name = 'probe';
  readonly rows: Float32Array[] = [];
  readonly routes: { experts: number[] }[] = [];
  readonly top1: number[] = [];
  stored = 0;
  constructor(private readonly cap: number) {}
  apply(x: Tensor, out: RouterOutput): RouterOutput {
    const T = x.shape[0];
    const d = x.shape[1];
    const per = tokenExperts({ router: out } as MoEAux, T, 1);
    for (let t = 0; t < T; t++) {
      this.top1.push(per[t].experts[0] ?? -1);
      if (this.stored < this.cap) {
        this.rows.push(x.data.slice(t * d, (t + 1) * d));
        this.routes.push({ experts: per[t].experts });
        this.stored++;
      }
    }
    return out;
  }
}

/**
 * Mean L2 norm of each expert's output on rows x [n, d]: over the rows routed to it (NaN when
 * none was) and over all rows.
 */
export function expertOutputNorms(bank: ExpertBank, x: Tensor, routed: readonly { experts: number[] }[]): { routed: number[]; all: number[] } {
  const E = bank.numExperts;
  const [n, d] = x.shape;
  if (routed.length !== n) throw new Error(`expertOutputNorms: ${routed.length} routings for ${n} rows`);
  const res = { routed: new Array<number>(E).fill(NaN), all: new Array<number>(E).fill(NaN) };
  if (n === 0) return res;
  noGrad(() => {
    for (let e = 0; e < E; e++) {
      const sizes = new Int32Array(E);
      sizes[e] = n;
      const y = bank.forwardGrouped(x, sizes).data;
      let all = 0;
      let sum = 0;
      let cnt = 0;
      for (let t = 0; t < n; t++) {
        let s = 0;
        for (let j = 0; j < d; j++) s += y[t * d + j] * y[t * d + j];
        const norm = Math.sqrt(s);
        all += norm;
        if (routed[t].experts.includes(e)) {
          sum += norm;
          cnt++;
        }
      }
      res.all[e] = all / n;
      res.routed[e] = cnt ? sum / cnt : NaN;
    }
  });
  return res;
}

/** What analyzeExperts measures and on how much data. */
export interface AnalyzeOptions {
  /** Validation batches per domain (default 2). */
  batches?: number;
  /** Routing traces of the first tokens of each domain's first validation window (default 64; 0: none). */
  traceTokens?: number;
  /** Forbid each expert of each MoE layer in turn and re-evaluate (default true; costs layers x experts evaluations). */
  ablation?: boolean;
  /** Prompts for the steering table: KL of the next-token distribution when each expert is forbidden. */
  prompts?: string[];
  /** Router-input rows per layer the output norms are measured on, at most (default 1024). */
  normTokens?: number;
}

/** One row of the steering table: forbidding `expert` in `layer` on the prompts. */
export interface SteerEffect {
  layer: number;
  expert: number;
  /** Mean over prompt positions of KL(p_base || p_forbidden) of the next-token distribution (nats). */
  kl: number;
  /** Fraction of prompt positions whose most likely next token changes. */
  top1Changed: number;
}

/** Every number of `moe-ts analyze` (the JSON file). */
export interface ExpertAnalysis {
  /** Decoder-layer indices of the MoE layers (the rows of every per-layer table). */
  layers: number[];
  numExperts: number;
  router: string;
  domains: string[];
  loss: number;
  domainLoss: { domain: string; loss: number; tokens: number }[];
  /** similarity[l][i][j]: cosine of experts i and j's flattened weights in MoE layer l. */
  similarity: number[][][];
  /** Mean expert output norms per MoE layer, on the validation tokens' router inputs. */
  outputNorms: { routed: number[]; all: number[]; tokens: number }[];
  /** agreement[l][m]: normalised mutual information of the top-1 experts of MoE layers l and m over the validation tokens. */
  agreement: number[][];
  /** sameTop1[l][m]: fraction of tokens whose top-1 expert index is the same in both layers (meaningful for upcycled experts). */
  sameTop1: number[][];
  /** usage[l][d][e]: share of domain d's assignments in MoE layer l that went to expert e. */
  usage: number[][][];
  /** ablation[l][e]: validation loss with expert e of MoE layer l forbidden, minus the loss without (null: not run). */
  ablation: number[][] | null;
  /** Why the ablation or steering table was not computed, if so. */
  note?: string;
  steer: SteerEffect[] | null;
  traces: { domain: string; tokens: TokenRouting[] }[];
}

/** Routing of the first `n` tokens of each domain's first validation window. */
export function validationTraces(model: MoETransformerLM, tokenizer: Tokenizer, data: MixedDataset, n: number): { domain: string; tokens: TokenRouting[] }[] {
  return noGrad(() =>
    data.domainNames.map((domain) => {
      const first = data.valBatches(domain, 1).next().value;
      if (!first || n <= 0) return { domain, tokens: [] };
      const T = Math.min(n, first.seqLen);
      const ids = first.inputs.slice(0, T);
      const { aux } = model.forward(ids, 1, T, { ctx: { training: false, step: 0, rng: new Rng(0) } });
      const per = aux.map((a) => ({ layer: a.layer, experts: tokenExperts(a.aux, T, model.config.num_experts_per_tok) }));
      return {
        domain,
        tokens: Array.from(ids, (id: number, t: number) => ({ id, text: tokenizer.decode(ids.subarray(t, t + 1)), prompt: false, layers: per.map((p) => ({ layer: p.layer, ...p.experts[t] })) })),
      };
    }),
  );
}

/** Next-token log-probabilities [n, V] of every position of ids. */
function logProbs(model: MoETransformerLM, ids: Int32Array): Float64Array {
  const V = model.config.vocab_size;
  const l = noGrad(() => model.forward(ids, 1, ids.length, { ctx: { training: false, step: 0, rng: new Rng(0) } }).logits.data);
  const out = new Float64Array(ids.length * V);
  for (let t = 0; t < ids.length; t++) {
    let m = -Infinity;
    for (let v = 0; v < V; v++) m = Math.max(m, l[t * V + v]);
    let s = 0;
    for (let v = 0; v < V; v++) s += Math.exp(l[t * V + v] - m);
    const lse = m + Math.log(s);
    for (let v = 0; v < V; v++) out[t * V + v] = l[t * V + v] - lse;
  }
  return out;
}

/**
 * For each MoE layer and expert: forbid it and measure how the next-token distribution on the
 * prompts moves (mean KL from the unsteered one, share of positions whose argmax changes).
 * Sorted by KL, largest first.
 */
export function steerEffects(model: MoETransformerLM, tokenizer: Tokenizer, prompts: readonly string[]): SteerEffect[] {
  if (!prompts.length) throw new Error('steerEffects: at least one prompt is required');
  const V = model.config.vocab_size;
  const seqs = prompts.map((p, i) => {
    const ids = tokenizer.encode(p);
    if (!ids.length) throw new Error(`steerEffects: prompt ${i} is empty after tokenisation`);
    if (ids.length > model.config.max_position_embeddings)
      throw new Error(`steerEffects: prompt ${i} has ${ids.length} tokens, more than max_position_embeddings ${model.config.max_position_embeddings}`);
    return ids;
  });
  const base = seqs.map((ids) => logProbs(model, ids));
  const argmaxRow = (lp: Float64Array, t: number) => {
    let b = 0;
    for (let v = 1; v < V; v++) if (lp[t * V + v] > lp[t * V + b]) b = v;
    return b;
  };
  const out: SteerEffect[] = [];
  for (const layer of moeLayerIndices(model)) {
    const E = model.layers[layer].block_sparse_moe!.numExperts;
    for (let e = 0; e < E; e++) {
      let kl = 0;
      let changed = 0;
      let n = 0;
      withExpertOverrides(model, [{ layer, forbid: [e] }], () => {
        seqs.forEach((ids, i) => {
          const lp = logProbs(model, ids);
          const b = base[i];
          for (let t = 0; t < ids.length; t++) {
            let s = 0;
            for (let v = 0; v < V; v++) {
              const p = Math.exp(b[t * V + v]);
              if (p > 0) s += p * (b[t * V + v] - lp[t * V + v]);
            }
            kl += Math.max(0, s);
            if (argmaxRow(lp, t) !== argmaxRow(b, t)) changed++;
            n++;
          }
        });
      });
      out.push({ layer, expert: e, kl: kl / n, top1Changed: changed / n });
    }
  }
  return out.sort((a, b) => b.kl - a.kl || a.layer - b.layer || a.expert - b.expert);
}

/** Everything `moe-ts analyze` reports, on the validation windows of `data`. */
export function analyzeExperts(model: MoETransformerLM, tokenizer: Tokenizer, data: MixedDataset, opts: AnalyzeOptions = {}): ExpertAnalysis {
  const layers = moeLayerIndices(model);
  if (!layers.length) throw new Error('analyze: the model has no MoE layers (a dense model has no experts to inspect)');
  const batches = opts.batches ?? 2;
  if (!Number.isInteger(batches) || batches < 1) throw new Error(`analyze: batches must be an integer >= 1, got ${batches}`);
  const moes = layers.map((i) => model.layers[i].block_sparse_moe!);
  const E = moes[0].numExperts;
  const wasTraining = model.training;
  model.eval();
  try {
    // one evaluation pass with identity probes: the loss, the usage, and each layer's router inputs and choices
    const probes = moes.map(() => new RoutingProbe(opts.normTokens ?? 1024));
    const restore = setRoutingOverrides(model, new Map(layers.map((l, i) => [l, probes[i]])));
    let ev;
    try {
      ev = evaluate(model, data, { maxBatches: batches });
    } finally {
      restore();
    }
    const similarity = moes.map((m) => {
      try {
        return cosineMatrix(expertWeightVectors(m.experts));
      } catch {
        return [];
      }
    });
    const outputNorms = moes.map((m, i) => {
      const p = probes[i];
      const d = p.rows[0]?.length ?? m.dModel;
      const x = new Tensor(new Float32Array(p.rows.length * d), [p.rows.length, d]);
      p.rows.forEach((r, t) => x.data.set(r, t * d));
      return { ...expertOutputNorms(m.experts, x, p.routes), tokens: p.rows.length };
    });
    const agreement = probes.map((a) => probes.map((b) => normalizedMutualInformation(a.top1, b.top1)));
    const sameTop1 = probes.map((a) =>
      probes.map((b) => {
        let same = 0;
        let n = 0;
        for (let t = 0; t < a.top1.length; t++) {
          if (a.top1[t] < 0 || b.top1[t] < 0) continue;
          n++;
          if (a.top1[t] === b.top1[t]) same++;
        }
        return n ? same / n : 0;
      }),
    );
    const usage = ev.expertUsage.map((per) =>
      per.map((u) => {
        const s = u.reduce((a, b) => a + b, 0);
        return u.map((v) => (s > 0 ? v / s : 0));
      }),
    );
    const traits = moes[0].specs.router.traits;
    const why = traits.noLogits
      ? `router "${moes[0].specs.router.name}" has no logits that rank experts (${traits.noLogits})`
      : traits.routing === 'soft'
        ? `router "${moes[0].specs.router.name}" routes softly`
        : undefined;
    let ablation: number[][] | null = null;
    if ((opts.ablation ?? true) && !why) {
      ablation = layers.map((layer, li) =>
        Array.from({ length: moes[li].numExperts }, (_, e) => withExpertOverrides(model, [{ layer, forbid: [e] }], () => evaluate(model, data, { maxBatches: batches }).loss) - ev.loss),
      );
    }
    const steer = opts.prompts?.length && !why ? steerEffects(model, tokenizer, opts.prompts) : null;
    return {
      layers,
      numExperts: E,
      router: moes[0].specs.router.name,
      domains: data.domainNames,
      loss: ev.loss,
      domainLoss: ev.domains.map((d) => ({ domain: d.domain, loss: d.loss, tokens: d.tokens })),
      similarity,
      outputNorms,
      agreement,
      sameTop1,
      usage,
      ablation,
      ...(why ? { note: `no ablation or steering table: ${why}` } : {}),
      steer,
      traces: validationTraces(model, tokenizer, data, opts.traceTokens ?? 64),
    };
  } finally {
    model.train(wasTraining);
  }
}
