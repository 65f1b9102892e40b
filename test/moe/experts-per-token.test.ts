// Experts per token actually used (issue 15): the expertsPerToken metric counts expert evaluations
// per token (kept sparse assignments; soft slots), never null experts or capacity drops, sums the
// sub-layers of a CartesianMoE layer, and the per-token trace (generate --show-routing, eval --trace)
// lists exactly the experts each token used, whatever num_experts_per_tok says.
import '../../src/kernels/index.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Tensor, noGrad } from '../../src/tensor/index.js';
import { Rng } from '../../src/tensor/random.js';
import { MoELayer, type MoELayerConfig } from '../../src/moe/layer.js';
import { tokenExperts, traceLayers } from '../../src/moe/trace.js';
import { expertsPerTokenOfLayers } from '../../src/moe/metrics.js';
import type { MoEAux, RouterContext, SoftRouting } from '../../src/moe/types.js';
import { routerRegistry } from '../../src/moe/routers/index.js';
import { MoETransformerLM } from '../../src/models/transformer.js';
import { parseModelConfig, parseRunConfig } from '../../src/models/config.js';
import { TrainSession } from '../../src/train/session.js';
import { ByteTokenizer } from '../../src/data/tokenizer/index.js';
import { generate } from '../../src/infer/index.js';
import { formatRouting } from '../../src/cli/routing-view.js';
import type { TokenRouting } from '../../src/infer/generate.js';
import { randn } from '../helpers/gradcheck.js';

const D = 6;
const ctx = (training = false, extra: Partial<RouterContext> = {}): RouterContext => ({ training, step: 0, totalSteps: 100, rng: new Rng(1), ...extra });
function layer(router: Record<string, unknown> & { type: string }, over: Partial<MoELayerConfig> = {}, seed = 2): MoELayer {
  return new MoELayer({ dModel: D, numExperts: 4, topK: 2, experts: { type: 'swiglu', dFF: 4 }, router, ...over }, new Rng(seed));
}
/** The layer's metric must equal the mean over tokens of the experts the trace lists for them. */
function agree(aux: MoEAux, T: number, what: string): number[] {
  const counts = tokenExperts(aux, T).map((t) => t.experts.length);
  const total = counts.reduce((s, v) => s + v, 0);
  assert.ok(Math.abs(aux.metrics.expertsPerToken - total / T) < 1e-12, `${what}: metric ${aux.metrics.expertsPerToken} vs trace ${total / T}`);
  if (aux.router.routing.kind === 'sparse')
    assert.equal(
      Array.from(aux.metrics.tokensPerExpert).reduce((s, v) => s + v, 0),
      total,
      `${what}: load adds up`,
    );
  return counts;
}

test('soft routing: experts per token is expert slot evaluations per token, E S / T (k when FLOP-matched), not E', () => {
  const T = 12;
  const x = randn(new Rng(3), [T, D], false);
  for (const S of [1, 3, 6]) {
    const { aux } = noGrad(() => layer({ type: 'soft', slotsPerExpert: S }).forward(x, ctx()));
    assert.equal(aux.metrics.expertsPerToken, (4 * S) / T, `S=${S}`);
  }
  // the benchmark's FLOP match S = T k / E gives exactly k expert evaluations per token
  const fm = routerRegistry.spec('soft').traits.flopMatch!({ batchTokens: T, topK: 2, numExperts: 4 });
  const { aux } = noGrad(() => layer({ type: 'soft', ...fm.options }).forward(x, ctx()));
  assert.equal(aux.metrics.expertsPerToken, 2);
  // Mixture of Tokens' sparse transition mode evaluates one slot per token and expert (top-k semantics, E experts of compute)
  const mot = noGrad(() => layer({ type: 'mixture-of-tokens', transitionSteps: 10 }).forward(x, ctx(false)));
  assert.equal((mot.aux.router.routing as SoftRouting).slotsPerExpert, T);
  assert.equal(mot.aux.metrics.expertsPerToken, 4);
  // ...while the trace shows the k experts whose output reaches each token
  for (const t of tokenExperts(mot.aux, T)) assert.equal(t.experts.length, 2);
});

test('variable-k routers: the metric is the mean of the experts each token actually used, and it varies per token', () => {
  const T = 40;
  const x = randn(new Rng(5), [T, D], false, 2);
  const cases: [string, Record<string, unknown> & { type: string }, Partial<MoELayerConfig>, boolean][] = [
    ['dynmoe', { type: 'dynmoe' }, {}, false],
    ['adaptive-gating', { type: 'adaptive-gating', threshold: 0.3 }, {}, false],
    ['top-p', { type: 'top-p', p: 0.5 }, {}, false],
    ['threshold', { type: 'threshold', threshold: 0.5 }, {}, false],
    ['expert-choice', { type: 'expert-choice' }, {}, false],
    ['null-experts', { type: 'null-experts', numNull: 2 }, { numExperts: 2, topK: 3 }, false],
    ['output-masking (training)', { type: 'output-masking', maskRate: 0.5 }, {}, true],
    ['gw-moe (training)', { type: 'gw-moe', threshold: 0.95 }, {}, true],
  ];
  for (const [name, router, over, training] of cases) {
    const l = layer(router, over);
    const { aux } = noGrad(() => l.forward(x, ctx(training)));
    const counts = agree(aux, T, name);
    assert.ok(new Set(counts).size > 1, `${name}: experts per token vary (${[...new Set(counts)]})`);
    // expert choice: each expert takes c = T k / E tokens, so the mean is k while tokens get 0..E experts
    if (name === 'expert-choice') assert.equal(aux.metrics.expertsPerToken, 2);
    else assert.notEqual(aux.metrics.expertsPerToken, l.topK, `${name}: not num_experts_per_tok`);
  }
});

test('null experts (AdaMoE, k above the real experts): only real experts count, exactly those of the top-k over real + null', () => {
  const l = layer({ type: 'null-experts', numNull: 2 }, { numExperts: 2, topK: 3 }, 4);
  const T = 30;
  const x = randn(new Rng(6), [T, D], false, 2);
  const { aux } = noGrad(() => l.forward(x, ctx()));
  const logits = noGrad(() => (l.router as unknown as { gate: { forward(x: Tensor): Tensor } }).gate.forward(x)).data;
  let real = 0;
  const per = tokenExperts(aux, T);
  for (let t = 0; t < T; t++) {
    const order = [0, 1, 2, 3].sort((a, b) => logits[t * 4 + b] - logits[t * 4 + a]).slice(0, 3);
    const want = order.filter((e) => e < 2).sort();
    assert.deepEqual([...per[t].experts].sort(), want, `token ${t}`);
    real += want.length;
  }
  assert.ok(Math.abs(aux.metrics.expertsPerToken - real / T) < 1e-12);
  assert.ok(aux.metrics.expertsPerToken < 2 && aux.metrics.expertsPerToken >= 1, `between 1 and E real experts: ${aux.metrics.expertsPerToken}`);
});

test('capacity drops: neither the metric nor the trace counts a dropped assignment; the trace lists it as dropped', () => {
  const l = layer({ type: 'topk' }, { dispatch: { type: 'capacity', capacityFactor: 0.5 } });
  const T = 16;
  const x = randn(new Rng(7), [T, D], false, 2);
  const { aux } = noGrad(() => l.forward(x, ctx()));
  assert.ok(aux.kept && aux.metrics.droppedFraction > 0, 'some assignments dropped');
  const counts = agree(aux, T, 'capacity');
  const per = tokenExperts(aux, T);
  const dropped = per.reduce((s, t) => s + (t.dropped?.length ?? 0), 0);
  assert.equal(dropped, aux.kept!.length - aux.kept!.reduce((s, v) => s + v, 0));
  assert.equal(counts.reduce((s, v) => s + v, 0) + dropped, 2 * T, 'used + dropped = k per token');
  const cell = formatRouting([{ id: 1, text: 'x', prompt: false, layers: [{ layer: 0, ...per.find((t) => t.dropped)! }] }], { color: false, numExperts: 4 });
  assert.match(cell, /dropped \d/);
});

const TINY = { vocab_size: 256, hidden_size: 16, num_hidden_layers: 2, num_attention_heads: 2, moe_intermediate_size: 8, max_position_embeddings: 32, num_local_experts: 4, num_experts_per_tok: 2 };

test('CartesianMoE: a token uses k_A + k_B sub-experts per layer, in the step metrics, in evaluate and in the trace', () => {
  const model = { ...TINY, ffn_type: 'cartesian-moe', ffn_options: { setB: 3, topKA: 2, topKB: 1 } };
  const m = new MoETransformerLM(parseModelConfig(model), 1);
  const ids = Int32Array.from({ length: 16 }, (_, i) => (i * 7) % 50);
  const res = noGrad(() => m.forward(ids, 2, 8, { ctx: ctx() }));
  assert.equal(res.aux.length, 4);
  assert.equal(expertsPerTokenOfLayers(res.aux), 3, 'A (2) + B (1) per layer, mean over the 2 layers');
  const text = 'To be, or not to be, that is the question. '.repeat(20);
  const cfg = parseRunConfig({
    model,
    training: { steps: 2, batch_size: 2, seq_len: 8, warmup_steps: 1, eval_interval: 2, eval_batches: 1, save_interval: 2 },
    data: { sources: ['a', 'b'] },
  });
  const s = new TrainSession(cfg, [text, text.toUpperCase()], new ByteTokenizer());
  assert.equal(s.trainStep().expertsPerToken, 3);
  assert.equal(s.evaluate().routing.expertsPerToken, 3);
  // the trace numbers the sub-layers; the view gives each its column with the count
  const tr = traceLayers(res.aux, 16);
  assert.deepEqual(
    tr.map((l) => [l.layer, l.sub, l.experts[0].experts.length]),
    [
      [0, 0, 2],
      [0, 1, 1],
      [1, 0, 2],
      [1, 1, 1],
    ],
  );
  const tokens: TokenRouting[] = [{ id: 84, text: 'T', prompt: false, layers: tr.map(({ experts, ...p }) => ({ ...p, ...experts[0] })) }];
  const view = formatRouting(tokens, { color: false, numExperts: 4 });
  for (const col of ['layer 0.a', 'layer 0.b', 'layer 1.a', 'layer 1.b']) assert.ok(view.includes(col), `${col} in\n${view}`);
  assert.match(view, /^ {3}0 {2}T +2: \d\(\d\.\d\d\) \d\(\d\.\d\d\) +1: \d\(\d\.\d\d\) +2: /m);
});

test('DA-MoE through the model: the step metric is the mean of the per-token expert counts, which follow attention', () => {
  const m = new MoETransformerLM(parseModelConfig({ ...TINY, router_type: 'da-moe' }), 1);
  const ids = Int32Array.from({ length: 16 }, (_, i) => (i * 5) % 32);
  const res = noGrad(() => m.forward(ids, 2, 8, { ctx: ctx() }));
  let total = 0;
  const seen = new Set<number>();
  for (const { aux } of res.aux)
    for (const n of agree(aux, 16, 'da-moe')) {
      seen.add(n);
      total += n;
    }
  assert.ok(Math.abs(expertsPerTokenOfLayers(res.aux) - total / 32) < 1e-12);
  assert.ok(seen.size > 1, `per-token counts vary: ${[...seen]}`);
});

test('generate --show-routing: the per-token count is the experts actually used (null experts, k = 3 > E = 2), shown as n in the view', () => {
  const model = new MoETransformerLM(parseModelConfig({ ...TINY, num_local_experts: 2, num_experts_per_tok: 3, router_type: 'null-experts', initializer_range: 0.5 }), 3).eval();
  const g = generate(model, new ByteTokenizer(), 'ab', { maxNewTokens: 10, temperature: 0.9, seed: 4, traceRouting: true });
  const counts = g.routing!.flatMap((t) => t.layers.map((l) => l.experts.length));
  assert.ok(
    counts.every((n) => n >= 1 && n <= 2),
    `real experts only: ${counts}`,
  );
  assert.ok(new Set(counts).size > 1, `counts vary: ${counts}`);
  const view = formatRouting(g.routing!, { color: false, numExperts: 2 });
  const rows = view.split('\n').filter((l) => /^ {2,3}\d+ {2}/.test(l));
  rows.forEach((row, i) => {
    const shown = [...row.matchAll(/ (\d): /g)].map((mm) => Number(mm[1]));
    assert.deepEqual(
      shown,
      g.routing![i].layers.map((l) => l.experts.length),
      row,
    );
  });
});

test('MH-MoE sub-tokens: the trace lists each token’s h sub-tokens’ experts (h k expert evaluations) instead of failing', () => {
  const model = new MoETransformerLM(parseModelConfig({ ...TINY, num_hidden_layers: 1, moe_sub_tokens: 2 }), 1).eval();
  const g = generate(model, new ByteTokenizer(), 'ab', { maxNewTokens: 3, seed: 1, traceRouting: true });
  assert.equal(g.routing!.length, 5);
  const ids = Int32Array.from(g.routing!.map((t) => t.id));
  const full = noGrad(() => model.forward(ids, 1, ids.length, { ctx: ctx() }));
  const r = full.aux[0].aux.router.routing;
  assert.equal(r.kind, 'sparse');
  g.routing!.forEach((t, i) => {
    const l = t.layers[0];
    assert.equal(l.experts.length, 2 * 2, `token ${i}: 2 sub-tokens x top-2`);
    // the experts of sub-tokens 2i and 2i+1 of the full forward
    const want: number[] = [];
    if (r.kind === 'sparse') for (let a = 0; a < r.tokenIdx.length; a++) if (Math.floor(r.tokenIdx[a] / 2) === i) want.push(r.expertIdx[a]);
    assert.deepEqual([...l.experts].sort(), want.sort(), `token ${i}`);
  });
});
