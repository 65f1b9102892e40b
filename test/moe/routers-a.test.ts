import { test } from 'node:test';
import assert from 'node:assert/strict';
import '../../src/kernels/index.js';
import { Tensor, noGrad } from '../../src/tensor/tensor.js';
import { Rng } from '../../src/tensor/random.js';
import type { Router, RouterContext, RouterOutput, SparseRouting, SoftRouting } from '../../src/moe/types.js';
import { routerRegistry, type RouterConfig } from '../../src/moe/routers/index.js';
import type { TopKRouter } from '../../src/moe/routers/topk.js';
import type { SwitchRouter } from '../../src/moe/routers/switch.js';
import type { ExpertChoiceRouter } from '../../src/moe/routers/expert-choice.js';
import type { AuxFreeRouter } from '../../src/moe/routers/aux-free.js';
import type { RouterOutputWithNoise } from '../../src/moe/routers/common.js';

function make<R extends Router = Router>(cfg: Partial<RouterConfig> & { type: string }, seed = 1): R {
  const full: RouterConfig = { dModel: 6, numExperts: 5, topK: 2, ...cfg };
  return routerRegistry.get(full.type)(full, new Rng(seed)) as R;
}

function ctx(training: boolean, seed = 7): RouterContext {
  return { training, step: 0, rng: new Rng(seed) };
}

function randx(T: number, d: number, seed = 3, std = 1): Tensor {
  return new Tensor(new Rng(seed).fillNormal(new Float32Array(T * d), std), [T, d]);
}

function sparse(out: RouterOutput): SparseRouting {
  assert.equal(out.routing.kind, 'sparse');
  return out.routing as SparseRouting;
}

/** Plain float64 softmax of each row of a [T, E] array. */
function softmaxRows(d: Float32Array, T: number, E: number): Float64Array {
  const out = new Float64Array(T * E);
  for (let t = 0; t < T; t++) {
    let m = -Infinity;
    for (let e = 0; e < E; e++) m = Math.max(m, d[t * E + e]);
    let s = 0;
    for (let e = 0; e < E; e++) s += out[t * E + e] = Math.exp(d[t * E + e] - m);
    for (let e = 0; e < E; e++) out[t * E + e] /= s;
  }
  return out;
}

/** logits = x W^T in float64. */
function project(x: Tensor, w: Tensor): Float32Array {
  const [T, d] = x.shape;
  const E = w.shape[0];
  const out = new Float32Array(T * E);
  for (let t = 0; t < T; t++)
    for (let e = 0; e < E; e++) {
      let s = 0;
      for (let j = 0; j < d; j++) s += x.data[t * d + j] * w.data[e * d + j];
      out[t * E + e] = s;
    }
  return out;
}

/**
 * Central finite differences of L = sum(out * r) (fixed random r) against autograd, for every
 * element of `params`. `fn` must be deterministic (fresh Rng per call); eps is small enough that
 * the discrete selection does not flip on these inputs.
 */
function fdCheck(what: string, fn: () => Tensor, params: Tensor[], eps = 1e-3, atol = 1e-3, rtol = 2e-2): void {
  for (const p of params) p.grad = null;
  const out = fn();
  const rng = new Rng(99);
  const r = new Float32Array(out.size).map(() => rng.next() * 2 - 1);
  out.backward(r);
  const L = (): number =>
    noGrad(() => {
      const o = fn();
      let s = 0;
      for (let i = 0; i < o.size; i++) s += o.data[i] * r[i];
      return s;
    });
  params.forEach((p, k) => {
    assert.ok(p.grad, `${what}: param ${k} got no gradient`);
    for (let i = 0; i < p.size; i++) {
      const orig = p.data[i];
      p.data[i] = orig + eps;
      const hi = p.data[i] - orig;
      const lp = L();
      p.data[i] = orig - eps;
      const lo = orig - p.data[i];
      const lm = L();
      p.data[i] = orig;
      const num = (lp - lm) / (hi + lo);
      const an = p.grad![i];
      assert.ok(Math.abs(an - num) <= atol + rtol * Math.max(Math.abs(an), Math.abs(num)), `${what}: param ${k} element ${i}: analytic ${an}, numeric ${num}`);
    }
    p.grad = null;
  });
}

test('all five routers are registered', () => {
  for (const n of ['topk', 'switch', 'expert-choice', 'soft', 'aux-free']) assert.ok(routerRegistry.has(n), n);
});

test('topk: k distinct experts per token, the k most probable, renormalised weights', () => {
  const T = 9,
    E = 5,
    k = 2;
  const r = make<TopKRouter>({ type: 'topk', numExperts: E, topK: k });
  const x = randx(T, 6);
  const out = r.route(x, ctx(true));
  assert.deepEqual(out.logits.shape, [T, E]);
  assert.deepEqual(out.probs.shape, [T, E]);
  const s = sparse(out);
  assert.equal(s.tokenIdx.length, T * k);
  assert.equal(s.weights.size, T * k);
  const p = softmaxRows(project(x, r.gate.weight), T, E);
  for (let t = 0; t < T; t++) {
    const chosen = new Set<number>();
    let wsum = 0;
    for (let j = 0; j < k; j++) {
      assert.equal(s.tokenIdx[t * k + j], t);
      chosen.add(s.expertIdx[t * k + j]);
      wsum += s.weights.data[t * k + j];
    }
    assert.equal(chosen.size, k, `token ${t} has duplicate experts`);
    assert.ok(Math.abs(wsum - 1) < 1e-6, `token ${t} weights sum to ${wsum}`);
    // every chosen expert beats every unchosen one
    for (const c of chosen) for (let e = 0; e < E; e++) if (!chosen.has(e)) assert.ok(p[t * E + c] >= p[t * E + e]);
    let ps = 0;
    for (let e = 0; e < E; e++) {
      ps += out.probs.data[t * E + e];
      assert.ok(Math.abs(out.probs.data[t * E + e] - p[t * E + e]) < 1e-6, 'probs = softmax(x W^T)');
    }
    assert.ok(Math.abs(ps - 1) < 1e-6);
  }
  assert.equal((out as RouterOutputWithNoise).noisyGating, undefined);
});

test('topk normalize=false: weights are the raw softmax probabilities', () => {
  const T = 6,
    E = 4,
    k = 2;
  const r = make<TopKRouter>({ type: 'topk', numExperts: E, topK: k, normalize: false });
  const out = r.route(randx(T, 6), ctx(false));
  const s = sparse(out);
  let anyBelowOne = false;
  for (let t = 0; t < T; t++) {
    let wsum = 0;
    for (let j = 0; j < k; j++) {
      const i = t * k + j;
      assert.equal(s.weights.data[i], out.probs.data[t * E + s.expertIdx[i]]);
      wsum += s.weights.data[i];
    }
    if (wsum < 1 - 1e-3) anyBelowOne = true;
  }
  assert.ok(anyBelowOne, 'unnormalised top-k weights should not sum to 1');
});

test('topk noisy gating: noise only in training, deterministic per seed', () => {
  const T = 40,
    E = 6,
    k = 2;
  const r = make<TopKRouter>({ type: 'topk', numExperts: E, topK: k, noisyGating: true });
  const clean = make<TopKRouter>({ type: 'topk', numExperts: E, topK: k });
  clean.gate.weight.data.set(r.gate.weight.data);
  const x = randx(T, 6);
  const ev = r.route(x, ctx(false));
  const ref = clean.route(x, ctx(false));
  assert.deepEqual(sparse(ev).expertIdx, sparse(ref).expertIdx, 'eval routing ignores the noise');
  assert.deepEqual(ev.logits.data, ref.logits.data);
  assert.equal((ev as RouterOutputWithNoise).noisyGating, undefined);
  const a = r.route(x, ctx(true, 11));
  const b = r.route(x, ctx(true, 11));
  const c = r.route(x, ctx(true, 12));
  assert.deepEqual(sparse(a).expertIdx, sparse(b).expertIdx);
  assert.deepEqual(a.logits.data, b.logits.data);
  assert.notDeepEqual(sparse(a).expertIdx, sparse(ref).expertIdx, 'training noise changes some choices');
  assert.notDeepEqual(sparse(a).expertIdx, sparse(c).expertIdx, 'another seed gives other noise');
  const ng = (a as RouterOutputWithNoise).noisyGating!;
  assert.ok(ng, 'training output carries the noisy gating stats');
  assert.equal(ng.noisy, a.logits);
  assert.deepEqual(ng.clean.data, ref.logits.data);
  for (const v of ng.noiseStd.data) assert.ok(Math.abs(v - Math.LN2) < 1e-6, 'zero-init noise projection: std softplus(0)');
  assert.deepEqual(
    r.namedParameters().map(([n]) => n),
    ['gate.weight', 'noise.weight'],
  );
});

test('topk weights are differentiable w.r.t. the router weights (finite differences)', () => {
  const x = randx(5, 6, 4);
  const r = make<TopKRouter>({ type: 'topk', numExperts: 4, topK: 2 }, 2);
  r.gate.weight.data.set(new Rng(5).fillNormal(new Float32Array(24), 0.7));
  fdCheck('topk', () => sparse(r.route(x, ctx(false))).weights, [r.gate.weight]);
  const rn = make<TopKRouter>({ type: 'topk', numExperts: 4, topK: 2, noisyGating: true, normalize: false }, 2);
  rn.gate.weight.data.set(r.gate.weight.data);
  rn.noise!.weight.data.set(new Rng(6).fillNormal(new Float32Array(24), 0.3));
  fdCheck('topk noisy', () => sparse(rn.route(x, ctx(true, 21))).weights, [rn.gate.weight, rn.noise!.weight]);
});

test('switch: one expert per token, weight equals its softmax probability', () => {
  const T = 10,
    E = 4;
  const r = make<SwitchRouter>({ type: 'switch', numExperts: E, topK: 1, capacityFactor: 1.5 });
  assert.equal(r.capacityFactor, 1.5);
  assert.equal(make<SwitchRouter>({ type: 'switch', numExperts: E, topK: 1 }).capacityFactor, 1.25);
  const x = randx(T, 6);
  const out = r.route(x, ctx(true));
  const s = sparse(out);
  assert.equal(s.expertIdx.length, T);
  for (let t = 0; t < T; t++) {
    assert.equal(s.tokenIdx[t], t);
    const e = s.expertIdx[t];
    for (let j = 0; j < E; j++) assert.ok(out.probs.data[t * E + e] >= out.probs.data[t * E + j]);
    assert.equal(s.weights.data[t], out.probs.data[t * E + e]);
  }
  fdCheck('switch', () => sparse(r.route(x, ctx(false))).weights, [r.gate.weight]);
});

test('switch jitter: multiplicative input noise only in training, seeded', () => {
  const r = make<SwitchRouter>({ type: 'switch', numExperts: 4, topK: 1, jitterNoise: 0.1 });
  const plain = make<SwitchRouter>({ type: 'switch', numExperts: 4, topK: 1 });
  const x = randx(8, 6);
  assert.deepEqual(r.route(x, ctx(false)).logits.data, plain.route(x, ctx(true)).logits.data);
  const a = r.route(x, ctx(true, 3)).logits.data;
  assert.deepEqual(a, r.route(x, ctx(true, 3)).logits.data);
  assert.notDeepEqual(a, plain.route(x, ctx(true)).logits.data);
});

test('expert-choice: every expert takes exactly c tokens, its top-c by score', () => {
  const T = 12,
    E = 4,
    k = 2;
  const r = make<ExpertChoiceRouter>({ type: 'expert-choice', numExperts: E, topK: k });
  const x = randx(T, 6);
  const out = r.route(x, ctx(true));
  const s = sparse(out);
  const c = Math.round((T * k) / E);
  assert.equal(c, 6);
  assert.equal(out.metrics.capacity, c);
  assert.equal(s.expertIdx.length, E * c);
  const per = new Map<number, number[]>();
  for (let i = 0; i < s.expertIdx.length; i++) {
    const e = s.expertIdx[i];
    if (!per.has(e)) per.set(e, []);
    per.get(e)!.push(s.tokenIdx[i]);
    assert.equal(s.weights.data[i], out.probs.data[s.tokenIdx[i] * E + e], 'weight = score of the pair');
  }
  for (let e = 0; e < E; e++) {
    const toks = per.get(e)!;
    assert.equal(toks.length, c);
    assert.equal(new Set(toks).size, c, `expert ${e} picked a token twice`);
    const minChosen = Math.min(...toks.map((t) => out.probs.data[t * E + e]));
    for (let t = 0; t < T; t++) if (!toks.includes(t)) assert.ok(out.probs.data[t * E + e] <= minChosen);
  }
  const half = make<ExpertChoiceRouter>({ type: 'expert-choice', numExperts: E, topK: k, capacityFactor: 0.5 });
  assert.equal(sparse(half.route(x, ctx(true))).expertIdx.length, E * 3);
  fdCheck('expert-choice', () => sparse(r.route(x, ctx(false))).weights, [r.gate.weight], 1e-3);
});

test('soft: dispatch columns and combine rows sum to 1; [T, E] aggregates are consistent', () => {
  const T = 7,
    E = 3,
    S = 2;
  const r = make({ type: 'soft', numExperts: E, slotsPerExpert: S });
  const x = randx(T, 6, 3, 3);
  const out = r.route(x, ctx(true));
  assert.equal(out.routing.kind, 'soft');
  const sr = out.routing as SoftRouting;
  assert.equal(sr.slotsPerExpert, S);
  assert.deepEqual(sr.dispatch.shape, [T, E * S]);
  assert.deepEqual(sr.combine.shape, [T, E * S]);
  for (let j = 0; j < E * S; j++) {
    let cs = 0;
    for (let t = 0; t < T; t++) cs += sr.dispatch.data[t * E * S + j];
    assert.ok(Math.abs(cs - 1) < 1e-5, `dispatch column ${j} sums to ${cs}`);
  }
  for (let t = 0; t < T; t++) {
    let rs = 0;
    for (let j = 0; j < E * S; j++) rs += sr.combine.data[t * E * S + j];
    assert.ok(Math.abs(rs - 1) < 1e-5, `combine row ${t} sums to ${rs}`);
  }
  assert.deepEqual(out.logits.shape, [T, E]);
  assert.deepEqual(out.probs.shape, [T, E]);
  const sm = softmaxRows(out.logits.data, T, E);
  for (let t = 0; t < T; t++)
    for (let e = 0; e < E; e++) {
      const agg = sr.combine.data[t * E * S + e * S] + sr.combine.data[t * E * S + e * S + 1];
      assert.ok(Math.abs(out.probs.data[t * E + e] - agg) < 1e-6, 'probs = combine summed over the expert slots');
      assert.ok(Math.abs(sm[t * E + e] - agg) < 1e-5, 'softmax(logits) = probs');
    }
  const phi = r.namedParameters()[0][1];
  fdCheck('soft dispatch', () => (r.route(x, ctx(false)).routing as SoftRouting).dispatch, [phi]);
  fdCheck('soft combine', () => (r.route(x, ctx(false)).routing as SoftRouting).combine, [phi]);
});

test('aux-free: bias-driven selection, weights from affinities, bias is a saved buffer', () => {
  const T = 6,
    E = 5,
    k = 2;
  const r = make<AuxFreeRouter>({ type: 'aux-free', numExperts: E, topK: k, routedScaling: 2.5 });
  const x = randx(T, 6);
  r.bias.data.set([0, 0, 0, 0, 10]); // expert 4 forced in for every token
  const out = r.route(x, ctx(true));
  const s = sparse(out);
  const aff = project(x, r.gate.weight).map((v) => 1 / (1 + Math.exp(-v)));
  for (let t = 0; t < T; t++) {
    const ex = [s.expertIdx[t * k], s.expertIdx[t * k + 1]];
    assert.equal(ex[0], 4, 'the bias decides the selection');
    const denom = aff[t * E + ex[0]] + aff[t * E + ex[1]];
    for (let j = 0; j < k; j++) {
      const want = (2.5 * aff[t * E + ex[j]]) / denom;
      assert.ok(Math.abs(s.weights.data[t * k + j] - want) < 1e-5, 'weights = normalised affinities (bias-free) x routedScaling');
    }
    let ps = 0;
    for (let e = 0; e < E; e++) ps += out.probs.data[t * E + e];
    assert.ok(Math.abs(ps - 1) < 1e-5, 'probs are normalised affinities');
  }
  assert.deepEqual(
    r.namedParameters().map(([n]) => n),
    ['gate.weight'],
    'the bias is not a Parameter',
  );
  const sd = r.stateDict();
  assert.deepEqual(Array.from(sd.get('bias')!.data), [0, 0, 0, 0, 10]);
  r.bias.data.fill(0);
  fdCheck('aux-free', () => sparse(r.route(x, ctx(false))).weights, [r.gate.weight]);
  assert.throws(() => r.afterStep(new Float64Array(3)), /router "aux-free".*3 entries.*numExperts=5/);
});

test('aux-free: route + afterStep evens out a skewed load without gradients', () => {
  const T = 64,
    E = 8,
    k = 2,
    d = 6;
  const r = make<AuxFreeRouter>({ type: 'aux-free', dModel: d, numExperts: E, topK: k, biasUpdateRate: 0.01 });
  const xd = new Rng(8).fillNormal(new Float32Array(T * d));
  for (let t = 0; t < T; t++) xd[t * d] = 1; // a constant feature...
  const x = new Tensor(xd, [T, d]);
  r.gate.weight.data[0] = 4; // ...that expert 0 loves: s_0 ~ 0.98 for every token
  const w0 = r.gate.weight.data.slice();
  const cv = (load: Float64Array): number => {
    const m = load.reduce((a, b) => a + b, 0) / E;
    return Math.sqrt(load.reduce((a, b) => a + (b - m) ** 2, 0) / E) / m;
  };
  const loads: Float64Array[] = [];
  for (let step = 0; step < 300; step++) {
    const out = r.route(x, { training: true, step, rng: new Rng(step) });
    const load = new Float64Array(E);
    for (const e of sparse(out).expertIdx) load[e]++;
    loads.push(load);
    r.afterStep(load);
  }
  const first = cv(loads[0]);
  const late =
    loads
      .slice(-20)
      .map(cv)
      .reduce((a, b) => a + b, 0) / 20;
  assert.equal(loads[0][0], T, 'every token starts on expert 0');
  assert.ok(late < 0.35 * first, `load CV ${first.toFixed(3)} -> ${late.toFixed(3)} should fall substantially`);
  assert.deepEqual(r.gate.weight.data, w0, 'router weights untouched');
  assert.equal(r.gate.weight.grad, null, 'no gradient involved');
  assert.ok(r.bias.data[0] < 0, 'the over-loaded expert gets a negative bias');
});

test('bad configs and inputs fail naming the router and the option', () => {
  assert.throws(() => make({ type: 'topk', noisyGate: true }), /router "topk": unknown option "noisyGate"/);
  assert.throws(() => make({ type: 'topk', noisyGating: 'yes' }), /router "topk": option noisyGating must be true or false/);
  assert.throws(() => make({ type: 'topk', topK: 6 }), /router "topk": topK must be an integer in \[1, numExperts=5\]/);
  assert.throws(() => make({ type: 'switch', capacityFactor: -1 }), /router "switch": option capacityFactor must be a positive number/);
  assert.throws(() => make({ type: 'switch', jitterNoise: 1 }), /router "switch": option jitterNoise/);
  assert.throws(() => make({ type: 'expert-choice', capacityFactor: '2' }), /router "expert-choice": option capacityFactor/);
  assert.throws(() => make({ type: 'soft', slotsPerExpert: 1.5 }), /router "soft": option slotsPerExpert must be a positive integer/);
  assert.throws(() => make({ type: 'aux-free', biasUpdateRate: -0.1 }), /router "aux-free": option biasUpdateRate/);
  assert.throws(() => make({ type: 'aux-free', routedScaling: 0 }), /router "aux-free": option routedScaling/);
  assert.throws(() => make({ type: 'soft', numExperts: 0 }), /router "soft": numExperts must be a positive integer/);
  assert.throws(() => make({ type: 'topk' }).route(randx(3, 4), ctx(false)), /router "topk": input must be \[tokens, 6\], got \[3, 4\]/);
});
