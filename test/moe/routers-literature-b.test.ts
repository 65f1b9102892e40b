// Defining properties of the issue-15 routers 11-19 and the balancing items (the generic contract
// is the conformance suite's): each test checks what the paper says the method does.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Tensor, noGrad, backward, sum, mul } from '../../src/tensor/index.js';
import { Rng } from '../../src/tensor/random.js';
import { MoELayer } from '../../src/moe/layer.js';
import { routerRegistry } from '../../src/moe/routers/index.js';
import { lossRegistry } from '../../src/moe/losses/index.js';
import type { RouterContext, RouterOutput, SoftRouting, SparseRouting } from '../../src/moe/types.js';
import { CosineRouter } from '../../src/moe/routers/cosine.js';
import { AdaptiveGatingRouter } from '../../src/moe/routers/adaptive-gating.js';
import { SMoEDropoutRouter } from '../../src/moe/routers/smoe-dropout.js';
import { DynMoERouter } from '../../src/moe/routers/dynmoe.js';
import { VQMoERouter } from '../../src/moe/routers/vqmoe.js';
import { balancedAssignment } from '../../src/moe/routers/base-layer.js';
import { MixtureOfTokensRouter } from '../../src/moe/routers/mixture-of-tokens.js';
import { causalMean } from '../../src/moe/routers/speechmoe.js';
import { allocateExperts } from '../../src/moe/routers/da-moe.js';
import { clusterVarianceLoss } from '../../src/moe/routers/moec.js';
import { MoETransformerLM, lmLoss, attentionImportance } from '../../src/models/transformer.js';
import { parseModelConfig } from '../../src/models/config.js';
import { gradcheck, randn, assertClose } from '../helpers/gradcheck.js';

const ctx = (training = false, step = 0, extra: Partial<RouterContext> = {}): RouterContext => ({ training, step, totalSteps: 100, rng: new Rng(1), ...extra });
const make = <R>(type: string, opts: Record<string, unknown> = {}, dims = { dModel: 6, numExperts: 4, topK: 2 }, seed = 3): R =>
  routerRegistry.get(type)({ type, ...dims, ...opts }, new Rng(seed)) as R;
const perToken = (r: SparseRouting, T: number): number[][] => {
  const out: number[][] = Array.from({ length: T }, () => []);
  for (let a = 0; a < r.tokenIdx.length; a++) out[r.tokenIdx[a]].push(r.expertIdx[a]);
  return out;
};
const sparse = (o: RouterOutput): SparseRouting => o.routing as SparseRouting;

test('every new router and loss is registered with its paper', () => {
  for (const n of ['cosine', 'adaptive-gating', 'smoe-dropout', 'dynmoe', 'vqmoe', 'base-layer', 'mixture-of-tokens', 'speechmoe', 'da-moe', 'moec', 'output-masking']) {
    const s = routerRegistry.spec(n);
    assert.ok(s.paper && s.paper.title.length > 0 && s.paper.year >= 2021, n);
  }
  for (const n of ['l1-sparsity', 'mean-importance']) assert.equal(lossRegistry.spec(n).paper?.year, 2021);
});

test('cosine: routing is invariant to the scale of x, |logits| <= 1/tau, and the temperature trains', () => {
  const r = make<CosineRouter>('cosine', { dim: 3, temperature: 0.5 });
  const x = randn(new Rng(2), [7, 6], false);
  const a = noGrad(() => r.route(x, ctx()));
  const b = noGrad(() =>
    r.route(
      new Tensor(
        x.data.map((v) => v * 13),
        x.shape,
      ),
      ctx(),
    ),
  );
  assert.deepEqual(Array.from(sparse(b).expertIdx), Array.from(sparse(a).expertIdx));
  assertClose(b.logits.data, a.logits.data, 1e-4, 1e-4, 'scale-invariant logits');
  for (const v of a.logits.data) assert.ok(Math.abs(v) <= 2 + 1e-4);
  const out = r.route(x, ctx(true));
  backward(sum(mul(sparse(out).weights, sparse(out).weights)));
  assert.ok(r.logTemp.grad && r.logTemp.grad[0] !== 0, 'log tau gets a gradient');
});

test('adaptive gating: two experts exactly when p1 - p2 < threshold; thresholds 0 and 1 are top-1 and top-2; the curriculum warms up', () => {
  const T = 40;
  const x = randn(new Rng(5), [T, 6], false, 3);
  for (const thr of [0, 0.05, 0.2, 1]) {
    const r = make<AdaptiveGatingRouter>('adaptive-gating', { threshold: thr });
    const o = noGrad(() => r.route(x, ctx()));
    const sets = perToken(sparse(o), T);
    const p = o.probs.data;
    for (let t = 0; t < T; t++) {
      const row = Array.from(p.subarray(t * 4, t * 4 + 4)).sort((u, v) => v - u);
      assert.equal(sets[t].length, row[0] - row[1] < thr ? 2 : 1, `token ${t} threshold ${thr}`);
    }
    if (thr === 0) assert.equal(sparse(o).tokenIdx.length, T);
    if (thr === 1) assert.equal(sparse(o).tokenIdx.length, 2 * T);
    // weights renormalised over the chosen set
    const w = sparse(o).weights.data;
    const s = new Float64Array(T);
    sparse(o).tokenIdx.forEach((t, a) => (s[t] += w[a]));
    for (const v of s) assert.ok(Math.abs(v - 1) < 1e-5);
  }
  const warm = make<AdaptiveGatingRouter>('adaptive-gating', { threshold: 0.1, warmupSteps: 10 });
  assert.equal(warm.thresholdAt({ training: true, step: 0 }), 1);
  assert.ok(Math.abs(warm.thresholdAt({ training: true, step: 5 }) - 0.55) < 1e-12);
  assert.equal(warm.thresholdAt({ training: true, step: 50 }), 0.1);
  assert.equal(warm.thresholdAt({ training: false, step: 0 }), 0.1);
});

test('SMoE-Dropout: the router has no trainable parameters, k grows from startK to endK in training, and any k runs at inference', () => {
  const r = make<SMoEDropoutRouter>('smoe-dropout', { startK: 1, growSteps: 10 });
  assert.equal(r.parameters().length, 0);
  assert.deepEqual(
    r.namedBuffers().map(([n]) => n),
    ['weight'],
  );
  const x = randn(new Rng(6), [5, 6], false);
  const ks = [0, 5, 10, 20].map((s) => noGrad(() => r.route(x, ctx(true, s))).metrics.activeK);
  assert.deepEqual(ks, [1, 3, 4, 4]);
  for (const k of [1, 2, 3, 4]) {
    const rk = make<SMoEDropoutRouter>('smoe-dropout', {}, { dModel: 6, numExperts: 4, topK: k });
    assert.deepEqual(Array.from(rk.weight.data), Array.from(r.weight.data), 'same seed, same frozen router for any k');
    const o = noGrad(() => rk.route(x, ctx(false)));
    assert.equal(sparse(o).tokenIdx.length, 5 * k);
  }
  // training leaves the router unchanged: a layer step moves experts only
  const layer = new MoELayer({ dModel: 6, numExperts: 4, topK: 2, experts: { type: 'swiglu', dFF: 4 }, router: { type: 'smoe-dropout' } }, new Rng(1));
  assert.ok(layer.namedParameters().every(([n]) => !n.startsWith('router.')));
});

test('DynMoE: top-any (every expert whose score clears its threshold), fallback to one expert, experts removed when idle and re-added for unrouted tokens', () => {
  const r = make<DynMoERouter>('dynmoe', { removeAfter: 2 });
  const T = 30;
  const x = randn(new Rng(7), [T, 6], false);
  const o = noGrad(() => r.route(x, ctx()));
  const sets = perToken(sparse(o), T);
  const s = o.logits.data.map((v) => 1 / (1 + Math.exp(-v)));
  let multi = 0;
  for (let t = 0; t < T; t++) {
    const above = [0, 1, 2, 3].filter((e) => s[t * 4 + e] > 0.5);
    if (above.length) assert.deepEqual(sets[t], above, `token ${t}`);
    else assert.equal(sets[t].length, 1);
    if (above.length > 1) multi++;
  }
  assert.ok(multi > 0, 'some token takes several experts');
  // a high threshold on every expert: every token falls back to exactly one
  r.threshold.data.fill(8);
  const hi = noGrad(() => r.route(x, ctx(true)));
  assert.equal(sparse(hi).tokenIdx.length, T);
  assert.equal(hi.metrics.unroutedFraction, 1);
  // removal: expert 3 idle for removeAfter steps leaves the pool; the unrouted tokens then bring a slot back
  r.threshold.data.fill(0);
  r.afterStep(Float64Array.from([5, 5, 5, 0]));
  assert.equal(r.activeCount(), 4);
  noGrad(() => r.route(x, ctx(false)));
  r.afterStep(Float64Array.from([5, 5, 5, 0]));
  assert.equal(r.active.data[3], 0);
  const o2 = noGrad(() => r.route(x, ctx(false)));
  assert.ok(!Array.from(sparse(o2).expertIdx).includes(3), 'a removed expert gets no tokens');
  r.threshold.data.fill(8);
  noGrad(() => r.route(x, ctx(true)));
  r.afterStep(Float64Array.from([5, 5, 5, 0]));
  assert.equal(r.active.data[3], 1, 'slot re-activated');
  let mean0 = 0;
  for (let t = 0; t < T; t++) mean0 += x.data[t * 6] / T;
  assert.ok(Math.abs(r.gate.data[3 * 6] - mean0) < 1e-5, 'new gate = mean of the unrouted tokens');
});

test('VQMoE: a token sits at its nearest code, and the router loss is the quantisation error', () => {
  const r = make<VQMoERouter>('vqmoe', { dim: 6, vqCoef: 1 }, { dModel: 6, numExperts: 4, topK: 1 });
  r.proj.weight.data.fill(0);
  for (let i = 0; i < 6; i++) r.proj.weight.data[i * 6 + i] = 1; // z = x
  const x = randn(new Rng(8), [10, 6], false);
  const o = noGrad(() => r.route(x, ctx()));
  const code = (e: number) => r.codebook.data.subarray(e * 6, e * 6 + 6);
  let err = 0;
  for (let t = 0; t < 10; t++) {
    const d = [0, 1, 2, 3].map((e) => code(e).reduce((s, c, i) => s + (x.data[t * 6 + i] - c) ** 2, 0));
    const best = d.indexOf(Math.min(...d));
    assert.equal(sparse(o).expertIdx[t], best);
    err += d[best] / 60;
  }
  assert.ok(Math.abs(o.losses.vq.item() - err) < 1e-4);
});

test('BASE layer: training assignment gives every expert the same number of tokens, each token one expert; eval is greedy top-1', () => {
  // scores where greedy top-1 sends every token to expert 0
  const T = 8;
  const E = 4;
  const s = new Float32Array(T * E);
  for (let t = 0; t < T; t++) for (let e = 0; e < E; e++) s[t * E + e] = (e === 0 ? 5 : 0) + 0.1 * ((t * 7 + e * 3) % 5);
  const a = balancedAssignment(s, T, E, 8);
  const load = new Int32Array(E);
  for (const e of a) load[e]++;
  assert.deepEqual(Array.from(load), [2, 2, 2, 2]);
  const layer = new MoELayer({ dModel: 6, numExperts: 4, topK: 1, experts: { type: 'swiglu', dFF: 4 }, router: { type: 'base-layer' } }, new Rng(2));
  const x = randn(new Rng(9), [12, 6], false);
  const tr = noGrad(() => layer.forward(x, ctx(true))).aux.metrics.tokensPerExpert;
  assert.deepEqual(Array.from(tr), [3, 3, 3, 3]);
  const ev = sparse(noGrad(() => layer.router.route(x, ctx(false))));
  const l = noGrad(() => layer.router.route(x, ctx(false))).logits.data;
  for (let t = 0; t < 12; t++) {
    const row = Array.from(l.subarray(t * 4, t * 4 + 4));
    assert.equal(ev.expertIdx[t], row.indexOf(Math.max(...row)));
  }
});

test('Mixture of Tokens: each expert mixes tokens of one group (same position, other sequences), never another position; transition mode is per-token top-k', () => {
  const B = 4;
  const L = 3;
  const r = make<MixtureOfTokensRouter>('mixture-of-tokens', { groupSize: 2 });
  const x = randn(new Rng(10), [B * L, 6], false);
  const o = noGrad(() => r.route(x, ctx(true, 0, { batchShape: { batch: B, seqLen: L } })));
  const soft = o.routing as SoftRouting;
  const G = soft.slotsPerExpert;
  assert.equal(G, L * (B / 2));
  const d = soft.dispatch.data;
  for (let j = 0; j < 4 * G; j++) {
    let s = 0;
    const pos = new Set<number>();
    const seqs = new Set<number>();
    for (let t = 0; t < B * L; t++)
      if (d[t * 4 * G + j] > 0) {
        s += d[t * 4 * G + j];
        pos.add(t % L);
        seqs.add(Math.floor(t / L));
      }
    assert.ok(Math.abs(s - 1) < 1e-5, `slot ${j} sums to 1`);
    assert.equal(pos.size, 1, 'one position per group');
    assert.equal(seqs.size, 2, 'groupSize sequences per group');
  }
  // causal within a sequence: changing a later position of sequence 0 changes no output of its earlier positions
  const layer = new MoELayer({ dModel: 6, numExperts: 4, topK: 2, experts: { type: 'swiglu', dFF: 4 }, router: { type: 'mixture-of-tokens', groupSize: 2 } }, new Rng(3));
  const c = ctx(false, 0, { batchShape: { batch: B, seqLen: L } });
  const y1 = noGrad(() => layer.forward(x, c)).y.data;
  const x2 = new Tensor(x.data.slice(), x.shape);
  for (let i = 0; i < 6; i++) x2.data[2 * 6 + i] += 1; // sequence 0, position 2
  const y2 = noGrad(() => layer.forward(x2, c)).y.data;
  assertClose(y2.subarray(0, 12), y1.subarray(0, 12), 1e-6, 1e-6, 'positions 0-1 of sequence 0');
  // transition mode: eval routes top-k per token, each token alone
  const rt = make<MixtureOfTokensRouter>('mixture-of-tokens', { transitionSteps: 10 });
  assert.equal(rt.sparseMode({ training: true, step: 50, totalSteps: 100 }), false);
  assert.equal(rt.sparseMode({ training: true, step: 95, totalSteps: 100 }), true);
  const ot = noGrad(() => rt.route(x, ctx(false))).routing as SoftRouting;
  const T = B * L;
  for (let t = 0; t < T; t++) {
    let nz = 0;
    let s = 0;
    for (let j = 0; j < 4 * T; j++) {
      const w = ot.combine.data[t * 4 * T + j];
      if (w > 0) {
        nz++;
        s += w;
        assert.equal(j % T, t, 'a token only reads its own slots');
      }
    }
    assert.equal(nz, 2);
    assert.ok(Math.abs(s - 1) < 1e-5);
  }
});

test('SpeechMoE: the router reads the shared embedding; the global embedding is a causal running mean with correct gradients', () => {
  const layerCfg = { dModel: 6, numExperts: 4, topK: 1, experts: { type: 'swiglu', dFF: 4 }, router: { type: 'speechmoe' } };
  const layer = new MoELayer(layerCfg, new Rng(4));
  for (const p of layer.router.parameters()) for (let i = 0; i < p.size; i++) p.data[i] *= 30;
  const x = randn(new Rng(11), [10, 6], false);
  const e1 = randn(new Rng(12), [10, 6], false);
  const e2 = randn(new Rng(13), [10, 6], false);
  const r1 = sparse(noGrad(() => layer.router.route(x, ctx(false, 0, { embeddings: e1 }))));
  const r2 = sparse(noGrad(() => layer.router.route(x, ctx(false, 0, { embeddings: e2 }))));
  assert.notDeepEqual(Array.from(r1.expertIdx), Array.from(r2.expertIdx));
  const e = randn(new Rng(14), [6, 3], false);
  const bs = { batch: 2, seqLen: 3 };
  const m = causalMean(e, bs).data;
  for (let i = 0; i < 3; i++) assert.ok(Math.abs(m[4 * 3 + i] - (e.data[3 * 3 + i] + e.data[4 * 3 + i]) / 2) < 1e-6);
  gradcheck('causalMean', (t) => causalMean(t, bs), [randn(new Rng(15), [6, 3])], { eps: 1e-3 });
});

test('DA-MoE: more attention, more experts (mean topK per sequence); the model supplies attention importance', () => {
  const imp = Float32Array.from([0.1, 0.1, 0.4, 0.2, 0.2, 0.2, 0.2, 0.2]);
  const k = allocateExperts(imp, 8, 2, 1, 4, { batch: 2, seqLen: 4 });
  assert.deepEqual(Array.from(k), [1, 1, 4, 2, 2, 2, 2, 2]);
  assert.deepEqual(Array.from(allocateExperts(undefined, 3, 2, 1, 4)), [2, 2, 2]);
  assert.throws(() => allocateExperts(Float32Array.from([1, NaN]), 2, 2, 1, 4), /tokenImportance\[1\] must be a finite non-negative number/);
  // uniform attention (q = 0): token j of n receives mean over i >= j of 1 / (i + 1)
  const q = new Tensor(new Float32Array(1 * 1 * 3 * 2), [1, 1, 3, 2]);
  const kk = randn(new Rng(16), [1, 1, 3, 2], false);
  const got = attentionImportance(q, kk, 0);
  assertClose(got, [(1 + 1 / 2 + 1 / 3) / 3, (1 / 2 + 1 / 3) / 2, 1 / 3], 1e-6, 1e-6, 'uniform attention importance');
  const model = new MoETransformerLM(
    parseModelConfig({
      vocab_size: 32,
      hidden_size: 16,
      num_hidden_layers: 1,
      num_attention_heads: 2,
      num_local_experts: 4,
      num_experts_per_tok: 2,
      moe_intermediate_size: 8,
      router_type: 'da-moe',
      max_position_embeddings: 16,
    }),
    1,
  );
  const ids = Int32Array.from({ length: 16 }, (_, i) => (i * 5) % 32);
  const res = noGrad(() => model.forward(ids, 2, 8, { ctx: { training: false, step: 0, rng: new Rng(1) } }));
  const mt = res.aux[0].aux.router.metrics;
  assert.ok(mt.maxExpertsPerToken > 2, 'importance varies the expert count');
});

test('null experts: topK above the number of real experts is accepted by the layer and the model config', () => {
  const layer = new MoELayer({ dModel: 6, numExperts: 2, topK: 3, experts: { type: 'swiglu', dFF: 4 }, router: { type: 'null-experts', numNull: 2 } }, new Rng(5));
  const x = randn(new Rng(17), [9, 6], false);
  const o = noGrad(() => layer.forward(x, ctx()));
  const sets = perToken(sparse(o.aux.router), 9);
  for (const s of sets) assert.ok(s.length >= 1 && s.length <= 2 && new Set(s).size === s.length);
  assert.throws(() => new MoELayer({ dModel: 6, numExperts: 2, topK: 3, experts: { type: 'swiglu', dFF: 4 }, router: { type: 'topk' } }), /topK must be at most numExperts/);
  assert.throws(
    () => new MoELayer({ dModel: 6, numExperts: 2, topK: 5, experts: { type: 'swiglu', dFF: 4 }, router: { type: 'null-experts', numNull: 2 } }),
    /topK must be an integer in \[1, numExperts \+ numNull = 4\]/,
  );
  parseModelConfig({ num_local_experts: 2, num_experts_per_tok: 3, router_type: 'null-experts' });
});

test('SpeechMoE losses: l1-sparsity is 1 for one-hot and sqrt(E) for uniform routing; mean-importance is 1 when balanced, E when collapsed; gradients match', () => {
  const rec = (p: number[][], grad = false): RouterOutput => {
    const t = new Tensor(Float32Array.from(p.flat()), [p.length, p[0].length], grad);
    return { logits: t, probs: t, routing: { kind: 'sparse', tokenIdx: new Int32Array(0), expertIdx: new Int32Array(0), weights: new Tensor(new Float32Array(0), [0]) }, losses: {}, metrics: {} };
  };
  const l1 = lossRegistry.get('l1-sparsity');
  const mi = lossRegistry.get('mean-importance');
  const info = { numExperts: 4, tokens: 2, topK: 1 };
  assert.ok(
    Math.abs(
      l1(
        rec([
          [1, 0, 0, 0],
          [0, 1, 0, 0],
        ]),
        info,
      ).item() - 1,
    ) < 1e-6,
  );
  assert.ok(
    Math.abs(
      l1(
        rec([
          [0.25, 0.25, 0.25, 0.25],
          [0.25, 0.25, 0.25, 0.25],
        ]),
        info,
      ).item() - 2,
    ) < 1e-6,
  );
  assert.ok(
    Math.abs(
      mi(
        rec([
          [1, 0, 0, 0],
          [0, 1, 0, 0],
        ]),
        info,
      ).item() - 2,
    ) < 1e-6,
  );
  assert.ok(
    Math.abs(
      mi(
        rec([
          [0.25, 0.25, 0.25, 0.25],
          [0.25, 0.25, 0.25, 0.25],
        ]),
        info,
      ).item() - 1,
    ) < 1e-6,
  );
  assert.ok(
    Math.abs(
      mi(
        rec([
          [1, 0, 0, 0],
          [1, 0, 0, 0],
        ]),
        info,
      ).item() - 4,
    ) < 1e-6,
  );
  for (const fn of [l1, mi]) {
    const p = new Tensor(Float32Array.from([0.1, 0.5, 0.3, 0.1, 0.4, 0.2, 0.2, 0.2]), [2, 4], true);
    gradcheck('speechmoe loss', (pp) => fn({ ...rec([[0]]), probs: pp, logits: pp }, info), [p], { eps: 1e-3 });
  }
});

test('MoEC: the constraint is low when cluster-mates agree and clusters differ; its gradient matches; expert dropout acts only in training', () => {
  const agree = new Tensor(Float32Array.from([0.45, 0.45, 0.05, 0.05]), [1, 4]);
  const split = new Tensor(Float32Array.from([0.45, 0.05, 0.45, 0.05]), [1, 4]);
  assert.ok(clusterVarianceLoss(agree, 2).item() < clusterVarianceLoss(split, 2).item());
  // hand value: clusters {0.45,0.45}, {0.05,0.05}: intra 0, cluster means 0.45/0.05 -> variance 0.04
  assert.ok(Math.abs(clusterVarianceLoss(agree, 2).item() + 0.04) < 1e-6);
  gradcheck('moec', (p) => clusterVarianceLoss(p, 2), [new Tensor(Float32Array.from([0.1, 0.5, 0.3, 0.1, 0.4, 0.2, 0.2, 0.2, 0.3]), [3, 3], true)], { eps: 1e-3 });
  const r = make<{ route: (x: Tensor, c: RouterContext) => RouterOutput }>('moec', { expertDropout: 0.5 });
  const x = randn(new Rng(18), [40, 6], false);
  const ev = sparse(noGrad(() => r.route(x, ctx(false))));
  const tr = sparse(noGrad(() => r.route(x, ctx(true))));
  assert.notDeepEqual(Array.from(tr.expertIdx), Array.from(ev.expertIdx));
  assert.equal(tr.tokenIdx.length, 80);
});

test('expert output masking: a maskRate fraction of tokens computes no expert in training only', () => {
  const r = make<{ route: (x: Tensor, c: RouterContext) => RouterOutput }>('output-masking', { maskRate: 0.5 });
  const x = randn(new Rng(19), [200, 6], false);
  const tr = noGrad(() => r.route(x, ctx(true)));
  const sets = perToken(sparse(tr), 200);
  const none = sets.filter((s) => s.length === 0).length;
  assert.equal(none, Math.round(tr.metrics.maskedFraction * 200));
  assert.ok(none > 70 && none < 130, `${none} of 200 masked`);
  for (const s of sets) assert.ok(s.length === 0 || s.length === 2);
  assert.equal(sparse(noGrad(() => r.route(x, ctx(false)))).tokenIdx.length, 400);
});

test('every new router trains inside the model: loss decreases over a few steps on a fixed batch', async () => {
  const { AdamW } = await import('../../src/nn/index.js');
  for (const type of ['cosine', 'adaptive-gating', 'smoe-dropout', 'dynmoe', 'vqmoe', 'base-layer', 'mixture-of-tokens', 'speechmoe', 'da-moe', 'moec', 'output-masking']) {
    const model = new MoETransformerLM(
      parseModelConfig({
        vocab_size: 16,
        hidden_size: 16,
        num_hidden_layers: 1,
        num_attention_heads: 2,
        num_local_experts: 4,
        num_experts_per_tok: 2,
        moe_intermediate_size: 8,
        router_type: type,
        max_position_embeddings: 8,
      }),
      2,
    );
    const opt = new AdamW(model.parameters(), { lr: 0.01 });
    const ids = Int32Array.from({ length: 16 }, (_, i) => (i * 3) % 16);
    const targets = Int32Array.from({ length: 16 }, (_, i) => (i * 3 + 1) % 16);
    const rng = new Rng(3);
    const losses: number[] = [];
    for (let s = 0; s < 6; s++) {
      const res = model.forward(ids, 2, 8, { ctx: { training: true, step: s, totalSteps: 6, rng } });
      const { loss, ce } = lmLoss(res, targets);
      losses.push(ce.item());
      opt.zeroGrad();
      backward(loss);
      opt.step();
      model.afterStep();
    }
    assert.ok(losses.every(Number.isFinite), type);
    assert.ok(losses[5] < losses[0], `${type}: ${losses.map((v) => v.toFixed(3)).join(' ')}`);
  }
});
