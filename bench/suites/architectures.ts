/**
 * Architecture comparison: dense, the standard MoE FFN and each language-model design from the
 * MoE literature that is on main (MH-MoE, MPOE, MoNE, MoA, MoH, SwitchHead, SwitchAll, CartesianMoE, ...), trained
 * on the same data, seeds and token budget at matched active FLOPs per token. Each design is one
 * entry of DESIGNS (model-config fields over the base, and the width field the suite tunes so its
 * FLOPs match the standard MoE's); another branch's design is one more line there.
 *
 * Active FLOPs are measured, not modelled: one training-mode forward of the built model with every
 * kernel call counted (2 x multiply-adds of every matmul and grouped matmul the backend runs:
 * projections, the experts a token actually reaches, attention products, the LM head), divided by
 * the tokens. PEER's single-neuron experts are gathered dot products outside the backend, so each
 * PEER layer adds them from its own record of what it retrieved (peerExpertFlops). Matching solves for the width on the (linear) FLOPs-vs-width line through two
 * measurements, rounds it to the field's multiple, and measures again.
 */
import * as os from 'node:os';
import * as path from 'node:path';
import * as fs from 'node:fs';
import { initBackend, disposeBackend } from '../../src/kernels/index.js';
import { getBackend, setBackend, type Backend } from '../../src/tensor/backend.js';
import { noGrad } from '../../src/tensor/tensor.js';
import { Rng } from '../../src/tensor/random.js';
import { parseRunConfig, parseModelConfig, type RunConfig, type ModelConfig } from '../../src/models/config.js';
import { buildModel } from '../../src/models/build.js';
import { PEERLayer } from '../../src/models/ffn/peer.js';
import type { Module } from '../../src/nn/module.js';
import { train } from '../../src/train/trainer.js';
import { median } from '../lib/timing.js';
import { tInterval, welchDifference } from '../lib/stats.js';
import type { Column, Row, SuiteOptions, SuiteTable } from '../lib/suite.js';

export const name = 'architectures';
export const description = 'dense, standard MoE and each MoE architecture design at matched active FLOPs: validation loss (t intervals over seeds), tokens/s, parameters, FLOPs/token';

/** One design: model-config fields over the base, and the width field tuned to match FLOPs (none: the reference). */
export interface ArchDesign {
  name: string;
  /** The design's paper, title and year (none for the baselines). */
  paper?: string;
  model: Record<string, unknown>;
  /** A numeric model field (dotted for an options record: 'ffn_options.heads', set in `model`) scaled until the design's active FLOPs/token match the reference's, rounded to `multiple`. */
  match?: { field: string; multiple: number };
}

/** The reference all others are matched to: the base config's standard MoE FFN. */
export const REFERENCE = 'moe';

/**
 * The designs, in table order. To add one: a line with its model fields and the width to tune.
 * Mamba's selective scan and conv are element-wise work, uncounted like every element-wise op.
 */
export const DESIGNS: ArchDesign[] = [
  { name: 'dense', model: { num_local_experts: 0 }, match: { field: 'intermediate_size', multiple: 8 } },
  { name: REFERENCE, paper: 'Mixtral of Experts, 2024 (top-2 SwiGLU experts)', model: {} },
  { name: 'mh-moe', paper: 'Multi-Head Mixture-of-Experts, 2024', model: { moe_sub_tokens: 2 }, match: { field: 'moe_intermediate_size', multiple: 4 } },
  {
    name: 'mpoe',
    paper: 'Parameter-Efficient Mixture-of-Experts Architecture for Pre-trained Language Models, 2022',
    model: { expert_type: 'mpo', expert_options: { bondDim: 4 } },
    match: { field: 'moe_intermediate_size', multiple: 8 },
  },
  {
    name: 'mone',
    paper: 'Mixture of Nested Experts, 2024',
    model: { expert_type: 'nested', router_type: 'nested-budget', num_local_experts: 3, num_experts_per_tok: 1, router_options: { capacities: [0.5, 0.25, 0.25] } },
    match: { field: 'moe_intermediate_size', multiple: 8 },
  },
  {
    name: 'moa',
    paper: 'Mixture of Attention Heads: Selecting Attention Heads Per Token, 2022',
    model: { attention_type: 'moa', attention_options: { numExperts: 8, topK: 2 } },
    match: { field: 'moe_intermediate_size', multiple: 4 },
  },
  {
    name: 'moh',
    paper: 'MoH: Multi-Head Attention as Head-Routing Mixture-of-Heads Attention, 2024',
    model: { attention_type: 'moh', attention_options: { sharedHeads: 1, topK: 2 } },
    match: { field: 'moe_intermediate_size', multiple: 4 },
  },
  {
    name: 'switchhead',
    paper: 'SwitchHead: Accelerating Transformers with Mixture-of-Experts Attention, 2024',
    model: { attention_type: 'switchhead', num_attention_heads: 2, num_local_experts: 0 },
    match: { field: 'intermediate_size', multiple: 8 },
  },
  { name: 'switchall', paper: 'SwitchHead, 2024 (SwitchAll: with MoE FFNs)', model: { attention_type: 'switchhead', num_attention_heads: 2 }, match: { field: 'moe_intermediate_size', multiple: 4 } },
  {
    name: 'mumoe',
    paper: 'Multilinear Mixture of Experts: Scalable Expert Specialization through Factorization, 2024',
    model: { ffn_type: 'mumoe' },
    match: { field: 'moe_intermediate_size', multiple: 4 },
  },
  {
    name: 'mod',
    paper: 'Mixture-of-Depths: Dynamically allocating compute in transformer-based language models, 2024',
    model: { mixture_of_depths: { capacity: 0.5, layers: [0] } },
    match: { field: 'moe_intermediate_size', multiple: 4 },
  },
  {
    name: 'moeut',
    paper: 'MoEUT: Mixture-of-Experts Universal Transformers, 2024',
    model: { layer_groups: 1, norm_placement: 'peri', attention_type: 'switchhead', num_attention_heads: 2, router_type: 'sigma-moe' },
    match: { field: 'moe_intermediate_size', multiple: 4 },
  },
  {
    // sub-experts of half the width by default (dFF = moe_intermediate_size / 2): k_A + k_B of them cost about k full experts
    name: 'cartesian-moe',
    paper: 'CartesianMoE: Boosting Knowledge Sharing among Experts via Cartesian Product Routing in Mixture-of-Experts, 2024',
    model: { ffn_type: 'cartesian-moe' },
    match: { field: 'moe_intermediate_size', multiple: 8 },
  },
  { name: 'mae', paper: 'A Mixture of h-1 Heads is Better than h Heads, 2020', model: { attention_type: 'mae' }, match: { field: 'moe_intermediate_size', multiple: 4 } },
  {
    name: 'mamba-moe',
    paper: 'MoE-Mamba: Efficient Selective State Space Models with Mixture of Experts, 2024',
    model: { model_type: 'mamba-moe' },
    match: { field: 'moe_intermediate_size', multiple: 4 },
  },
  { name: 'all-mlp', paper: 'Efficient Language Modeling with Sparse all-MLP, 2022', model: { model_type: 'all-mlp' }, match: { field: 'moe_intermediate_size', multiple: 4 } },
  {
    // 16,384 single-neuron experts, 16 per head; narrow keys so the retrieval does not eat the budget, heads matched
    name: 'peer',
    paper: 'Mixture of A Million Experts, 2024',
    model: { ffn_type: 'peer', ffn_options: { numExperts: 16384, topK: 16, keyDim: 32, heads: 4 } },
    match: { field: 'ffn_options.heads', multiple: 1 },
  },
];

/** Seeds per design (the t intervals need n >= 2). */
export const SEEDS = 2;
/** Two-sided coverage of the intervals. */
export const COVERAGE = 0.95;
/** A design whose matched FLOPs miss the reference's by more than this fraction is flagged in the table. */
export const FLOP_TOLERANCE = 0.1;

export const columns: Column[] = [
  { key: 'design', header: 'design' },
  { key: 'seed', header: 'seed' },
  { key: 'steps', header: 'steps' },
  { key: 'params', header: 'params' },
  { key: 'activeParams', header: 'active' },
  { key: 'flopsPerToken', header: 'FLOPs/tok' },
  { key: 'flopsRatio', header: 'FLOPs / moe' },
  { key: 'valLoss', header: 'val loss' },
  { key: 'tokensPerS', header: 'tok/s' },
  { key: 'seconds', header: 'wall s' },
  { key: 'status', header: 'status' },
];

/**
 * The base run config: the model-field defaults (8 experts of 128, top-2, no shared expert: not
 * `train`'s shared + top-1 default, since several expert designs have no shared form) and the
 * `train` training defaults on the embedded three-domain mix, or a smoke-sized model with --quick.
 */
export function baseConfig(quick: boolean, seed: number, steps?: number): RunConfig {
  const base = parseRunConfig({ model: {} });
  const model = quick ? { ...base.model, hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 4, max_position_embeddings: 32, moe_intermediate_size: 32, intermediate_size: 64 } : base.model;
  const n = steps ?? (quick ? 10 : 200);
  const t = base.training;
  const training = quick
    ? { ...t, steps: n, batch_size: 4, seq_len: 32, warmup_steps: 2, eval_interval: n, eval_batches: 2, seed, save_interval: n }
    : { ...t, steps: n, seed, save_interval: n, eval_interval: Math.max(1, Math.floor(n / 5)), warmup_steps: Math.min(t.warmup_steps, Math.floor(n / 5)) };
  return parseRunConfig({ model, training, data: { ...base.data, sources: ['shakespeare', 'wikitext', 'linux'] } });
}

function* walk(m: Module): Generator<Module> {
  yield m;
  for (const [, c] of m.namedChildren()) yield* walk(c);
}

/**
 * FLOPs of the PEER layers' last forward that no backend kernel ran: per retrieved expert the
 * down and up dot products (2 x d multiply-adds), per (token, head) the k^2 candidate sums of the
 * product-key top-k. The query projection and the sub-key scores are backend matmuls, counted there.
 */
export function peerExpertFlops(model: Module): number {
  let flops = 0;
  for (const m of walk(model)) {
    if (!(m instanceof PEERLayer) || !m.lastRetrieval) continue;
    const retrieved = m.lastRetrieval.experts.length;
    flops += 2 * 2 * m.dModel * retrieved + (retrieved / m.topK) * m.topK * m.topK;
  }
  return flops;
}

/**
 * Active FLOPs per token of one training-mode forward of `model` on `B x T` random tokens:
 * 2 x the multiply-adds of every backend matmul / grouped matmul, plus PEER's own (peerExpertFlops), over B * T.
 */
export function measureFlopsPerToken(cfg: ModelConfig, B: number, T: number, seed = 0): number {
  const model = buildModel(cfg, seed);
  const rng = new Rng(seed + 1);
  const ids = new Int32Array(B * T);
  for (let i = 0; i < ids.length; i++) ids[i] = Math.floor(rng.next() * cfg.vocab_size);
  const inner = getBackend();
  let macs = 0;
  const counting: Backend = {
    name: inner.name,
    threads: inner.threads,
    matmul: (a, b, m, k, n, o) => {
      macs += (o?.batch ?? 1) * m * k * n;
      return inner.matmul(a, b, m, k, n, o);
    },
    groupedMatmul: (a, w, sizes, k, n, t, o) => {
      let rows = 0;
      for (const s of sizes) rows += s;
      macs += rows * k * n;
      return inner.groupedMatmul(a, w, sizes, k, n, t, o);
    },
    groupedMatmulTN: (a, g, sizes, k, n) => inner.groupedMatmulTN(a, g, sizes, k, n),
    dispose: () => inner.dispose(),
  };
  setBackend(counting);
  try {
    noGrad(() => model.forward(ids, B, T, { ctx: { training: true, step: 0, totalSteps: 1, rng } }));
  } finally {
    setBackend(inner);
  }
  return (2 * macs + peerExpertFlops(model)) / (B * T);
}

/** The value of a model field, dotted ('ffn_options.heads') into an options record. */
function fieldOf(fields: Record<string, unknown>, field: string): unknown {
  let v: unknown = fields;
  for (const k of field.split('.')) v = v !== null && typeof v === 'object' ? (v as Record<string, unknown>)[k] : undefined;
  return v;
}

/** `fields` with one (possibly dotted) field replaced, records along the path copied. */
function withField(fields: Record<string, unknown>, field: string, value: number): Record<string, unknown> {
  const [head, ...rest] = field.split('.');
  if (!rest.length) return { ...fields, [head]: value };
  const inner = fields[head];
  return { ...fields, [head]: withField(inner !== null && typeof inner === 'object' ? (inner as Record<string, unknown>) : {}, rest.join('.'), value) };
}

/** A design's model config: the base with the design's fields (not yet matched). */
export function designModel(base: ModelConfig, d: ArchDesign, where = `design "${d.name}"`): ModelConfig {
  return parseModelConfig({ ...base, ...d.model }, where);
}

/** A design matched to `target` FLOPs/token by its width field; returns the config and its measured FLOPs. */
export function matchDesign(base: ModelConfig, d: ArchDesign, target: number, B: number, T: number): { model: ModelConfig; flops: number } {
  const m0 = designModel(base, d);
  if (!d.match) return { model: m0, flops: measureFlopsPerToken(m0, B, T) };
  const { field, multiple } = d.match;
  const w0 = fieldOf(field.includes('.') ? d.model : (m0 as unknown as Record<string, unknown>), field);
  if (typeof w0 !== 'number') throw new Error(`design "${d.name}": match field ${field} is not a numeric model field${field.includes('.') ? ' set in the design' : ''}`);
  const at = (w: number): ModelConfig => designModel(base, { ...d, model: withField(d.model, field, w) });
  const f0 = measureFlopsPerToken(m0, B, T);
  const w1 = 2 * w0;
  const f1 = measureFlopsPerToken(at(w1), B, T);
  // FLOPs are affine in a width: one line through two measurements
  const slope = (f1 - f0) / (w1 - w0);
  const exact = slope > 0 ? w0 + (target - f0) / slope : w0;
  const w = Math.max(multiple, Math.round(exact / multiple) * multiple);
  const model = at(w);
  return { model, flops: measureFlopsPerToken(model, B, T) };
}

/** Which designs to run: BENCH_ARCH_DESIGNS (comma-separated names) or all. */
export function selectDesigns(list = process.env.BENCH_ARCH_DESIGNS): ArchDesign[] {
  if (!list) return DESIGNS;
  const names = list
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  const bad = names.filter((n) => !DESIGNS.some((d) => d.name === n));
  if (bad.length) throw new Error(`BENCH_ARCH_DESIGNS: unknown design ${bad.join(', ')} (known: ${DESIGNS.map((d) => d.name).join(', ')})`);
  return DESIGNS.filter((d) => names.includes(d.name) || d.name === REFERENCE);
}

function envInt(name: string): number | undefined {
  const v = process.env[name];
  if (v === undefined || v === '') return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name} must be a positive integer, got "${v}"`);
  return n;
}

/** Train every design over the seeds; rows of kind 'run' (or 'error' for a design that cannot be built). */
export async function runDesigns(designs: readonly ArchDesign[], opts: SuiteOptions & { steps?: number; seeds?: number }): Promise<Row[]> {
  const seeds = opts.seeds ?? (opts.quick ? 2 : SEEDS);
  const rows: Row[] = [];
  const cfg0 = baseConfig(opts.quick, opts.seed, opts.steps);
  const B = 4;
  const T = Math.min(cfg0.training.seq_len, cfg0.model.max_position_embeddings);
  const refDesign = DESIGNS.find((d) => d.name === REFERENCE)!;
  const target = matchDesign(cfg0.model, refDesign, 0, B, T).flops;
  const matched = new Map<string, { model: ModelConfig; flops: number } | Error>();
  for (const d of designs) {
    try {
      matched.set(d.name, d.name === REFERENCE ? { model: designModel(cfg0.model, d), flops: target } : matchDesign(cfg0.model, d, target, B, T));
    } catch (e) {
      matched.set(d.name, e as Error);
    }
  }
  for (let s = 0; s < seeds; s++) {
    const seed = opts.seed + s;
    // rotate the order per seed so machine-load drift does not always favour the same design
    const order = designs.map((_, i) => designs[(i + s) % designs.length]);
    for (const d of order) {
      const m = matched.get(d.name)!;
      if (m instanceof Error) {
        if (s === 0) rows.push({ kind: 'error', design: d.name, status: `error: ${m.message.split('\n')[0].slice(0, 200)}` });
        continue;
      }
      const base = baseConfig(opts.quick, seed, opts.steps);
      const c = { ...base, model: m.model };
      const out = fs.mkdtempSync(path.join(os.tmpdir(), 'moe-ts-bench-arch-'));
      opts.log(`architectures: ${d.name} seed ${seed}, ${c.training.steps} steps, ${Math.round(m.flops)} FLOPs/token`);
      const tps: number[] = [];
      const t0 = performance.now();
      try {
        const r = await train({ config: c, outDir: out, events: { onStep: (x) => tps.push(x.tokensPerSec) } });
        rows.push({
          kind: 'run',
          design: d.name,
          seed,
          steps: r.steps,
          tokens: r.steps * c.training.batch_size * c.training.seq_len,
          params: r.params,
          activeParams: r.activeParams,
          flopsPerToken: Math.round(m.flops),
          flopsRatio: Number((m.flops / target).toFixed(3)),
          matchedField: d.match ? `${d.match.field}=${String(fieldOf(m.model as unknown as Record<string, unknown>, d.match.field))}` : '',
          valLoss: Number(r.finalEval.loss.toFixed(5)),
          tokensPerS: Math.round(median(tps)),
          seconds: Math.round((performance.now() - t0) / 100) / 10,
          status: Math.abs(m.flops / target - 1) > FLOP_TOLERANCE ? 'FLOPs off' : 'ok',
          curve: r.history.map((h) => ({ step: h.step, tokens: h.tokensSeen, loss: Number(h.result.loss.toFixed(5)) })),
        });
      } catch (e) {
        rows.push({ kind: 'error', design: d.name, seed, status: `error: ${(e as Error).message.split('\n')[0].slice(0, 200)}` });
      } finally {
        fs.rmSync(out, { recursive: true, force: true });
      }
    }
  }
  return rows;
}

export async function run(opts: SuiteOptions): Promise<Row[]> {
  const backendName = opts.backends.includes('native') ? 'native' : (opts.backends[0] ?? 'auto');
  const b = await initBackend(backendName, { threads: Math.max(...opts.threads) });
  try {
    const rows = await runDesigns(selectDesigns(), { ...opts, steps: envInt('BENCH_ARCH_STEPS'), seeds: envInt('BENCH_ARCH_SEEDS') });
    for (const r of rows) r.backend = `${b.name}/${b.threads}`;
    return rows;
  } finally {
    disposeBackend();
  }
}

const num = (v: unknown): number => (typeof v === 'number' ? v : NaN);
const pm = (xs: number[], digits = 4): string => {
  const iv = tInterval(xs, COVERAGE);
  return Number.isFinite(iv.hi) ? `${iv.mean.toFixed(digits)} ± ${((iv.hi - iv.lo) / 2).toFixed(digits)}` : iv.mean.toFixed(digits);
};

/** Per design: mean validation loss with its t interval, the difference to the standard MoE (Welch), speed and size. */
export interface DesignSummary {
  design: string;
  paper: string;
  n: number;
  valLoss: number[];
  diff: ReturnType<typeof welchDifference> | null;
  tokensPerS: number;
  speedRatio: number;
  params: number;
  activeParams: number;
  flopsPerToken: number;
  flopsRatio: number;
  matchedField: string;
}

/** The comparison behind the report table, from the suite's rows (exported for tests). */
export function summarize(rows: readonly Row[]): DesignSummary[] {
  const runs = rows.filter((r) => r.kind === 'run');
  const of = (d: string): Row[] => runs.filter((r) => r.design === d).sort((a, b) => num(a.seed) - num(b.seed));
  const ref = of(REFERENCE);
  const refLoss = ref.map((r) => num(r.valLoss));
  const refTps = ref.length ? ref.reduce((s, r) => s + num(r.tokensPerS), 0) / ref.length : NaN;
  const names = [...DESIGNS.map((d) => d.name), ...new Set(runs.map((r) => String(r.design)))].filter((n, i, a) => a.indexOf(n) === i);
  const out: DesignSummary[] = [];
  for (const n of names) {
    const rs = of(n);
    if (!rs.length) continue;
    const loss = rs.map((r) => num(r.valLoss));
    const tps = rs.reduce((s, r) => s + num(r.tokensPerS), 0) / rs.length;
    out.push({
      design: n,
      paper: DESIGNS.find((d) => d.name === n)?.paper ?? '',
      n: rs.length,
      valLoss: loss,
      diff: n !== REFERENCE && loss.length >= 2 && refLoss.length >= 2 ? welchDifference(loss, refLoss, COVERAGE) : null,
      tokensPerS: Math.round(tps),
      speedRatio: tps / refTps,
      params: num(rs[0].params),
      activeParams: num(rs[0].activeParams),
      flopsPerToken: num(rs[0].flopsPerToken),
      flopsRatio: num(rs[0].flopsRatio),
      matchedField: String(rs[0].matchedField ?? ''),
    });
  }
  return out;
}

export function report(rows: Row[]): SuiteTable[] {
  const s = summarize(rows);
  const cov = `${Math.round(COVERAGE * 100)}%`;
  const tables: SuiteTable[] = [
    {
      title: `Designs at matched active FLOPs/token: final validation loss (mean ± ${cov} t interval over seeds), difference to the standard MoE (Welch SE), speed and size`,
      columns: [
        { key: 'design', header: 'design' },
        { key: 'n', header: 'seeds' },
        { key: 'loss', header: 'val loss' },
        { key: 'diff', header: '- moe' },
        { key: 'z', header: 'diff/SE' },
        { key: 'tps', header: 'tok/s' },
        { key: 'speed', header: 'tok/s / moe' },
        { key: 'params', header: 'params' },
        { key: 'active', header: 'active' },
        { key: 'flops', header: 'FLOPs/tok' },
        { key: 'fr', header: 'FLOPs / moe' },
        { key: 'matched', header: 'matched by' },
      ],
      rows: s.map((d) => ({
        design: d.design,
        n: d.n,
        loss: pm(d.valLoss),
        diff: d.diff ? Number(d.diff.mean.toFixed(4)) : '',
        z: d.diff && Number.isFinite(d.diff.z) ? Number(d.diff.z.toFixed(2)) : '',
        tps: d.tokensPerS,
        speed: Number(d.speedRatio.toFixed(3)),
        params: d.params,
        active: d.activeParams,
        flops: d.flopsPerToken,
        fr: d.flopsRatio,
        matched: d.matchedField,
      })),
    },
  ];
  const errors = rows.filter((r) => r.kind === 'error');
  if (errors.length)
    tables.push({
      title: 'Designs that did not run',
      columns: [
        { key: 'design', header: 'design' },
        { key: 'status', header: 'status' },
      ],
      rows: errors,
    });
  return tables;
}
