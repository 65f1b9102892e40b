// Defining properties of the issue-15 routers 1-10 (the generic contract is in conformance.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import '../../src/kernels/index.js';
import { Tensor, noGrad, sum, mul, add } from '../../src/tensor/index.js';
import { Rng } from '../../src/tensor/random.js';
import { AdamW } from '../../src/nn/optim.js';
import type { Router, RouterContext, RouterOutput, SparseRouting } from '../../src/moe/types.js';
import { routerRegistry, type RouterConfig } from '../../src/moe/routers/index.js';
import { MoELayer } from '../../src/moe/layer.js';
import { symmetricKL } from '../../src/models/transformer.js';
import type { StableMoERouter } from '../../src/moe/routers/stablemoe.js';
import type { DSelectKRouter } from '../../src/moe/routers/dselect-k.js';
import type { AutonomyRouter } from '../../src/moe/routers/autonomy.js';
import type { MaskMoERouter } from '../../src/moe/routers/maskmoe.js';
import type { SmileRouter } from '../../src/moe/routers/smile.js';
import { gradcheck, randn, assertClose } from '../helpers/gradcheck.js';

function make<R extends Router = Router>(cfg: Partial<RouterConfig> & { type: string }, seed = 1): R {
  const full: RouterConfig = { dModel: 6, numExperts: 4, topK: 2, ...cfg };
  return routerRegistry.get(full.type)(full, new Rng(seed)) as R;
}
const ctx = (training: boolean, step = 0, extra: Partial<RouterContext> = {}): RouterContext => ({ training, step, totalSteps: 100, rng: new Rng(7), ...extra });
const sparse = (o: RouterOutput): SparseRouting => {
  assert.equal(o.routing.kind, 'sparse');
  return o.routing as SparseRouting;
};
/** Each token's experts, in listing order. */
function perToken(r: SparseRouting, T: number): number[][] {
  const out: number[][] = Array.from({ length: T }, () => []);
  for (let a = 0; a < r.tokenIdx.length; a++) out[r.tokenIdx[a]].push(r.expertIdx[a]);
  return out;
}
const topIdx = (row: ArrayLike<number>, k: number): number[] =>
  Array.from(row, (v, i) => [v, i] as const)
    .sort((a, b) => b[0] - a[0] || a[1] - b[1])
    .slice(0, k)
    .map((p) => p[1]);

test('stablemoe: after the switch step the assignment of a fixed input never changes; before it the distilled router learns', () => {
  const r = make<StableMoERouter>({ type: 'stablemoe', switchStep: 4, buckets: 64 });
  const x = randn(new Rng(2), [12, 6], false);
  const tokenIds = Int32Array.from({ length: 12 }, (_, i) => (i * 5) % 7);
  const opt = new AdamW(r.parameters(), { lr: 0.05 });
  const coef = new Rng(3).fillNormal(new Float32Array(12 * 2), 1);
  const assignments: number[][][] = [];
  let lightBefore: Float32Array = Float32Array.from(r.light.data);
  let lightAtSwitch: Float32Array | null = null;
  for (let step = 0; step < 10; step++) {
    if (step === 4) lightAtSwitch = Float32Array.from(r.light.data);
    const o = r.route(x, ctx(true, step, { tokenIds }));
    assert.equal(o.metrics.stage, step < 4 ? 1 : 2);
    assert.equal('stablemoe-distill' in o.losses, step < 4);
    let loss = sum(mul(sparse(o).weights, new Tensor(coef, [24])));
    for (const l of Object.values(o.losses)) loss = add(loss, l);
    loss.backward();
    opt.step();
    opt.zeroGrad();
    assignments.push(perToken(sparse(o), 12));
  }
  assert.notDeepEqual(lightAtSwitch, lightBefore, 'stage 1 trains the lightweight router');
  lightBefore = lightAtSwitch!;
  assert.deepEqual(Array.from(r.light.data), Array.from(lightBefore), 'stage 2 freezes it');
  for (let s = 5; s < 10; s++) assert.deepEqual(assignments[s], assignments[4], `step ${s}`);
  // same token id -> same experts, whatever its hidden state; eval at step 0 (generation) routes like stage 2
  const ev = perToken(sparse(noGrad(() => r.route(randn(new Rng(9), [12, 6], false), ctx(false, 0, { tokenIds })))), 12);
  assert.deepEqual(ev, assignments[4]);
  // the distillation target is the backbone's top-1: after stage 1 the table agrees with it on most tokens
  const fresh = make<StableMoERouter>({ type: 'stablemoe', switchStep: 1000, buckets: 64, distillCoef: 1 });
  const o2 = new AdamW(fresh.parameters(), { lr: 0.2 });
  for (let s = 0; s < 40; s++) {
    const o = fresh.route(x, ctx(true, s, { tokenIds }));
    o.losses['stablemoe-distill'].backward();
    o2.step();
    o2.zeroGrad();
  }
  const final = noGrad(() => fresh.route(x, ctx(true, 40, { tokenIds })));
  assert.ok(final.losses['stablemoe-distill'].item() < Math.log(4) * 0.8, `distillation loss fell: ${final.losses['stablemoe-distill'].item()}`);
});

test('stablemoe: the stage-1 balance loss weighs each assignment by its expert’s relative overload', () => {
  const r = make<StableMoERouter>({ type: 'stablemoe', switchStep: 100, balanceCoef: 0.5, distillCoef: 0, topK: 1 });
  const x = randn(new Rng(4), [10, 6], false);
  const o = r.route(x, ctx(true, 0, { tokenIds: Int32Array.from({ length: 10 }, (_, i) => i) }));
  const rt = sparse(o);
  const load = [0, 0, 0, 0];
  for (const e of rt.expertIdx) load[e]++;
  let want = 0;
  for (let a = 0; a < 10; a++) want += ((load[rt.expertIdx[a]] - 2.5) / 2.5) * rt.weights.data[a];
  assertClose([o.losses['stablemoe-balance'].item()], [(0.5 * want) / 10], 1e-6, 1e-5);
  assert.ok(!('stablemoe-distill' in o.losses));
  for (let a = 0; a < 10; a++) assertClose([rt.weights.data[a]], [1 / (1 + Math.exp(-o.logits.data[a * 4 + rt.expertIdx[a]]))], 1e-6, 1e-5);
});

test('thor: training draws random experts (different per draw, all experts used); inference is deterministic; consistency is a symmetric KL', () => {
  const r = make({ type: 'thor', consistency: 2 });
  assert.equal(r.consistencyWeight, 2);
  const x = randn(new Rng(2), [400, 6], false);
  const a = sparse(r.route(x, { training: true, step: 0, rng: new Rng(1) }));
  const b = sparse(r.route(x, { training: true, step: 0, rng: new Rng(2) }));
  assert.equal(a.expertIdx.length, 400);
  assert.notDeepEqual(Array.from(a.expertIdx), Array.from(b.expertIdx));
  const counts = new Array(4).fill(0);
  for (const e of a.expertIdx) counts[e]++;
  for (const c of counts) assert.ok(c > 60 && c < 140, `roughly uniform: ${counts}`);
  const tokenIds = Int32Array.from({ length: 400 }, (_, i) => i);
  const e1 = sparse(r.route(x, { training: false, step: 0, rng: new Rng(1), tokenIds }));
  const e2 = sparse(r.route(x, { training: false, step: 0, rng: new Rng(5), tokenIds }));
  assert.deepEqual(Array.from(e1.expertIdx), Array.from(e2.expertIdx));
  // symmetric KL: zero for equal logits, the hand value otherwise
  const la = new Tensor(Float32Array.of(1, 0, -1, 0.5, 0.5, 0), [2, 3]);
  const lb = new Tensor(Float32Array.of(0, 0, 0, 2, 0, 0), [2, 3]);
  assert.ok(Math.abs(symmetricKL(la, la).item()) < 1e-7);
  const sm = (v: number[]) => v.map((z) => Math.exp(z) / v.reduce((s, w) => s + Math.exp(w), 0));
  let want = 0;
  for (let row = 0; row < 2; row++) {
    const p = sm(Array.from(la.data.slice(row * 3, row * 3 + 3)));
    const q = sm(Array.from(lb.data.slice(row * 3, row * 3 + 3)));
    for (let i = 0; i < 3; i++) want += 0.5 * (p[i] * Math.log(p[i] / q[i]) + q[i] * Math.log(q[i] / p[i]));
  }
  assert.ok(Math.abs(symmetricKL(la, lb).item() - want / 2) < 1e-6);
  gradcheck('symmetricKL', (p, q) => symmetricKL(p, q), [randn(new Rng(4), [2, 3]), randn(new Rng(5), [2, 3])]);
});

test('dselect-k: the gate matches finite differences through the smooth steps, sums to 1, and saturates to at most k experts', () => {
  for (const E of [4, 5]) {
    const r = make<DSelectKRouter>({ type: 'dselect-k', numExperts: E, topK: 2, gamma: 2 });
    for (const p of r.parameters()) for (let i = 0; i < p.size; i++) p.data[i] *= 8; // inside the smooth band for some entries, saturated for others
    const x = randn(new Rng(3), [5, 6]);
    const w = noGrad(() => r.gates(x).w);
    for (let t = 0; t < 5; t++) assertClose([w.data.slice(t * E, t * E + E).reduce((s, v) => s + v, 0)], [1], 1e-5, 0, `row ${t} sums to 1`);
    const rep = gradcheck(`dselect-k gate E=${E}`, (xx) => r.gates(xx).w, [x, ...r.parameters()], { eps: 1e-3, atol: 2e-3, rtol: 2e-2 });
    assert.ok(rep.checked > 0);
  }
  // saturated smooth steps: each selector is one-hot, so at most k experts get weight
  const r = make<DSelectKRouter>({ type: 'dselect-k', numExperts: 8, topK: 2 });
  for (const p of r.parameters()) for (let i = 0; i < p.size; i++) p.data[i] *= 500;
  const o = noGrad(() => r.route(randn(new Rng(4), [20, 6], false), ctx(false)));
  for (const ex of perToken(sparse(o), 20)) assert.ok(ex.length >= 1 && ex.length <= 2, `experts ${ex}`);
  // at init (mostly inside the band) the gate is dense: differentiable selection starts from many more than k experts
  const dense = noGrad(() => make({ type: 'dselect-k', numExperts: 8, topK: 2 }).route(randn(new Rng(4), [20, 6], false, 0.5), ctx(false)));
  const used = perToken(sparse(dense), 20).map((ex) => ex.length);
  assert.ok(used.reduce((s, v) => s + v, 0) / 20 > 4, `experts per token at init: ${used}`);
});

test('competesmoe: a competition step routes to the experts with the largest output norm and trains the router toward that outcome', () => {
  const layer = new MoELayer({ dModel: 6, numExperts: 4, topK: 2, experts: { type: 'swiglu', dFF: 5 }, router: { type: 'competesmoe', competeProb: 1 } }, new Rng(2));
  const x = randn(new Rng(3), [7, 6], false);
  const { aux } = noGrad(() => layer.forward(x, ctx(true)));
  assert.equal(aux.router.metrics.competed, 1);
  const norms: number[][] = [];
  for (let t = 0; t < 7; t++) {
    norms.push(Array.from({ length: 4 }, (_, e) => Math.hypot(...layer.experts.referenceForward!(e, x.data.subarray(t * 6, t * 6 + 6)))));
  }
  const chosen = perToken(sparse(aux.router), 7);
  for (let t = 0; t < 7; t++) assert.deepEqual(chosen[t], topIdx(norms[t], 2), `token ${t}`);
  // the loss is KL(softmax(norms) || router softmax), mean over tokens
  let kl = 0;
  const p = aux.router.probs.data;
  for (let t = 0; t < 7; t++) {
    const z = norms[t].reduce((s, v) => s + Math.exp(v), 0);
    for (let e = 0; e < 4; e++) {
      const q = Math.exp(norms[t][e]) / z;
      kl += q * Math.log(q / p[t * 4 + e]);
    }
  }
  assertClose([aux.losses['compete-predict'].item()], [kl / 7], 1e-4, 1e-3);
  // without competition (eval) the router's own top-k decides
  const ev = noGrad(() => layer.forward(x, ctx(false))).aux.router;
  assert.equal(ev.metrics.competed, 0);
  for (let t = 0; t < 7; t++) assert.deepEqual(perToken(sparse(ev), 7)[t], topIdx(ev.probs.data.slice(t * 4, t * 4 + 4), 2));
  assert.throws(() => layer.router.route(x, ctx(true)), /competesmoe.*ctx\.experts/);
});

test('autonomy: experts are chosen by the norm of their own low-rank activation', () => {
  const r = make<AutonomyRouter>({ type: 'autonomy', rank: 3 });
  const x = randn(new Rng(5), [9, 6], false);
  const o = noGrad(() => r.route(x, ctx(false)));
  const W = r.down.weight.data; // [E*r, d]
  const chosen = perToken(sparse(o), 9);
  for (let t = 0; t < 9; t++) {
    const norms = Array.from({ length: 4 }, (_, e) => {
      let s = 0;
      for (let j = 0; j < 3; j++) {
        let h = 0;
        for (let i = 0; i < 6; i++) h += W[(e * 3 + j) * 6 + i] * x.data[t * 6 + i];
        s += h * h;
      }
      return Math.sqrt(s);
    });
    assertClose(o.logits.data.slice(t * 4, t * 4 + 4), norms, 1e-5, 1e-5);
    assert.deepEqual(chosen[t], topIdx(norms, 2));
  }
  assert.equal(r.parameters().length, 1, 'no router besides the experts’ encoders');
  assert.throws(() => make({ type: 'autonomy', rank: 7 }), /option rank must be at most dModel=6/);
});

test('gw-moe: uncertain tokens go to every expert in training only; confident tokens keep top-k', () => {
  const r = make({ type: 'gw-moe', threshold: 0.9, startStep: 5 });
  const flat = randn(new Rng(1), [6, 6], false, 0.01); // near-uniform routing: entropy ~ ln E
  const tr = sparse(r.route(flat, ctx(true, 5)));
  for (const ex of perToken(tr, 6)) assert.deepEqual(ex, [0, 1, 2, 3]);
  const w = perToken({ ...tr, expertIdx: Int32Array.from(tr.weights.data.map((_, i) => i)) }, 6);
  for (const idx of w) assertClose([idx.reduce((s, a) => s + tr.weights.data[a], 0)], [1], 1e-5, 0);
  assert.ok(
    perToken(sparse(r.route(flat, ctx(true, 4))), 6).every((ex) => ex.length === 2),
    'before startStep: top-k',
  );
  assert.ok(
    perToken(sparse(r.route(flat, ctx(false, 9))), 6).every((ex) => ex.length === 2),
    'inference: top-k',
  );
  const sharp = make({ type: 'gw-moe', threshold: 0.9 });
  for (const p of sharp.parameters()) for (let i = 0; i < p.size; i++) p.data[i] *= 200;
  const o = sharp.route(randn(new Rng(2), [6, 6], false), ctx(true, 0));
  assert.equal(o.metrics.broadcastFraction, 0);
  assert.ok(perToken(sparse(o), 6).every((ex) => ex.length === 2));
});

test('maskmoe: once the mask is fixed a rare token always sees one fixed expert, a frequent token its visible set', () => {
  const r = make<MaskMoERouter>({ type: 'maskmoe', numExperts: 8, topK: 2, countSteps: 2, frequentFraction: 1 / 3, frequentExperts: 3, buckets: 16 });
  // id 1 very frequent, id 2 frequent, ids 3..6 rare
  const ids = Int32Array.of(1, 1, 1, 1, 1, 2, 2, 2, 3, 4, 5, 6);
  let seed = 10;
  const x = () => randn(new Rng(seed++), [12, 6], false);
  for (let s = 0; s < 2; s++) assert.equal(r.route(x(), ctx(true, s, { tokenIds: ids })).metrics.maskFixed, 0);
  const seen = new Map<number, Set<number>>();
  for (let s = 2; s < 8; s++) {
    const o = noGrad(() => r.route(x(), ctx(s % 2 === 0, s, { tokenIds: ids })));
    assert.equal(o.metrics.maskFixed, 1);
    const pt = perToken(sparse(o), 12);
    for (let t = 0; t < 12; t++) {
      const id = ids[t];
      assert.equal(pt[t].length, id <= 2 ? 2 : 1, `id ${id}`);
      const set = seen.get(id) ?? new Set<number>();
      for (const e of pt[t]) set.add(e);
      seen.set(id, set);
    }
  }
  for (const [id, set] of seen) assert.ok(id <= 2 ? set.size <= 3 : set.size === 1, `id ${id} used experts ${[...set]}`);
  assert.equal(r.visible(1).length, 3, 'a frequent id sees frequentExperts experts');
  assert.equal(r.visible(5).length, 1);
  assert.throws(() => make({ type: 'maskmoe', frequentExperts: 9 }), /option frequentExperts must be an integer in \[topK=2, numExperts=4\]/);
});

test('rmoe: the routing state flows from layer to layer (values and gradients)', () => {
  const r1 = make({ type: 'rmoe', hidden: 5 }, 1);
  const r2 = make({ type: 'rmoe', hidden: 5 }, 2);
  const x2 = randn(new Rng(3), [4, 6], false);
  const run = (x1: Tensor) => {
    const state = new Map<string, unknown>();
    r1.route(x1, ctx(false, 0, { state }));
    return r2.route(x2, ctx(false, 0, { state }));
  };
  const a = noGrad(() => run(randn(new Rng(4), [4, 6], false))).logits.data;
  const b = noGrad(() => run(randn(new Rng(5), [4, 6], false))).logits.data;
  assert.ok(
    a.some((v, i) => Math.abs(v - b[i]) > 1e-6),
    'layer 2 routing depends on layer 1 input',
  );
  const alone = noGrad(() => r2.route(x2, ctx(false))).logits.data;
  assert.ok(
    alone.some((v, i) => Math.abs(v - a[i]) > 1e-6),
    'and differs from a fresh state',
  );
  // gradients of layer 2's logits reach layer 1's GRU
  const x1 = randn(new Rng(6), [4, 6]);
  gradcheck('rmoe across layers', (xx) => run(xx).logits, [x1, ...r1.parameters()], { eps: 1e-3, atol: 2e-3, rtol: 2e-2 });
});

test('cartesian: the routing distribution is the product of the two sub-routers and the top-k pairs are chosen', () => {
  const r = make({ type: 'cartesian', numExperts: 6, topK: 2, setA: 2 });
  for (const p of r.parameters()) for (let i = 0; i < p.size; i++) p.data[i] *= 20;
  const x = randn(new Rng(7), [5, 6], false);
  const o = noGrad(() => r.route(x, ctx(false)));
  const p = o.probs.data;
  for (let t = 0; t < 5; t++) {
    const pa = [0, 1].map((a) => [0, 1, 2].reduce((s, b) => s + p[t * 6 + a * 3 + b], 0));
    const pb = [0, 1, 2].map((b) => [0, 1].reduce((s, a) => s + p[t * 6 + a * 3 + b], 0));
    for (let a = 0; a < 2; a++) for (let b = 0; b < 3; b++) assertClose([p[t * 6 + a * 3 + b]], [pa[a] * pb[b]], 1e-6, 1e-5);
    assert.deepEqual(perToken(sparse(o), 5)[t], topIdx(p.slice(t * 6, t * 6 + 6), 2));
  }
  assert.throws(() => make({ type: 'cartesian', numExperts: 6, setA: 4 }), /option setA must divide numExperts=6/);
});

test('smile: every chosen expert lies in the token’s best group', () => {
  const r = make<SmileRouter>({ type: 'smile', numExperts: 8, topK: 2, numGroups: 4 });
  for (const p of r.parameters()) for (let i = 0; i < p.size; i++) p.data[i] *= 20;
  const x = randn(new Rng(8), [30, 6], false);
  const o = noGrad(() => r.route(x, ctx(false)));
  const pg = noGrad(() => r.groupGate.forward(x)).data;
  const groups = new Set<number>();
  perToken(sparse(o), 30).forEach((ex, t) => {
    const g = topIdx(pg.slice(t * 4, t * 4 + 4), 1)[0];
    groups.add(g);
    assert.deepEqual(
      ex.map((e) => Math.floor(e / 2)),
      [g, g],
      `token ${t}`,
    );
    // probs = p(group) p(expert | group) sum to 1
    assertClose([o.probs.data.slice(t * 8, t * 8 + 8).reduce((s, v) => s + v, 0)], [1], 1e-5, 0);
  });
  assert.ok(groups.size > 1, 'several groups used');
  assert.throws(() => make({ type: 'smile', numExperts: 8, topK: 3, numGroups: 4 }), /option numGroups must divide numExperts=8 into groups of at least topK=3/);
});
