/**
 * Dynamic and special routers: remoe, top-p, threshold, null-experts, hash, dense-to-sparse.
 * Each router's defining property, its record's shapes, gradients of the combine weights against
 * finite differences, and clear errors for bad options and inputs.
 */
import '../../src/kernels/index.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Tensor } from '../../src/tensor/tensor.js';
import { Rng } from '../../src/tensor/random.js';
import { linear, softmax, scatterAdd, sum, add, mul, sub, scale } from '../../src/tensor/index.js';
import { AdamW } from '../../src/nn/optim.js';
import { MoELayer } from '../../src/moe/layer.js';
import type { Router, RouterContext, RouterOutput, SparseRouting } from '../../src/moe/types.js';
import { routerRegistry, type RouterConfig } from '../../src/moe/routers/registry.js';
import type { ReMoERouter } from '../../src/moe/routers/remoe.js';
import type { NullExpertsRouter } from '../../src/moe/routers/null-experts.js';
import type { HashRouter } from '../../src/moe/routers/hash.js';
import type { DenseToSparseRouter } from '../../src/moe/routers/dense-to-sparse.js';
import { gradcheck, randn, assertClose } from '../helpers/gradcheck.js';
// the router files register themselves on import; the class imports above are types only
import '../../src/moe/routers/remoe.js';
import '../../src/moe/routers/top-p.js';
import '../../src/moe/routers/threshold.js';
import '../../src/moe/routers/null-experts.js';
import '../../src/moe/routers/hash.js';
import '../../src/moe/routers/dense-to-sparse.js';

const D = 8;
const E = 6;

function cfg(type: string, extra: Record<string, unknown> = {}, topK = 2): RouterConfig {
  return { type, dModel: D, numExperts: E, topK, ...extra };
}

function make(type: string, extra: Record<string, unknown> = {}, topK = 2, seed = 1): Router {
  return routerRegistry.get(type)(cfg(type, extra, topK), new Rng(seed));
}

function ctx(over: Partial<RouterContext> = {}): RouterContext {
  return { training: true, step: 0, rng: new Rng(99), ...over };
}

function input(T: number, seed = 5, std = 1): Tensor {
  return randn(new Rng(seed), [T, D], false, std);
}

function sparse(out: RouterOutput): SparseRouting {
  assert.equal(out.routing.kind, 'sparse');
  return out.routing as SparseRouting;
}

/** The listed experts of each token, in listing order. */
function perToken(r: SparseRouting, T: number): number[][] {
  const out: number[][] = Array.from({ length: T }, () => []);
  for (let i = 0; i < r.tokenIdx.length; i++) out[r.tokenIdx[i]].push(r.expertIdx[i]);
  return out;
}

function checkRecord(out: RouterOutput, T: number, numExperts = E): SparseRouting {
  assert.deepEqual(out.logits.shape, [T, numExperts]);
  assert.deepEqual(out.probs.shape, [T, numExperts]);
  const r = sparse(out);
  assert.equal(r.expertIdx.length, r.tokenIdx.length);
  assert.equal(r.weights.size, r.tokenIdx.length);
  for (let i = 0; i < r.tokenIdx.length; i++) {
    assert.ok(r.tokenIdx[i] >= 0 && r.tokenIdx[i] < T, `tokenIdx[${i}] out of range`);
    assert.ok(r.expertIdx[i] >= 0 && r.expertIdx[i] < numExperts, `expertIdx[${i}] out of range`);
  }
  // token-major, no duplicate (token, expert) pairs
  const seen = new Set<number>();
  for (let i = 0; i < r.tokenIdx.length; i++) {
    if (i > 0) assert.ok(r.tokenIdx[i] >= r.tokenIdx[i - 1], 'assignments are token-major');
    const key = r.tokenIdx[i] * numExperts + r.expertIdx[i];
    assert.ok(!seen.has(key), `duplicate assignment token ${r.tokenIdx[i]} expert ${r.expertIdx[i]}`);
    seen.add(key);
  }
  return r;
}

/** The weights scattered into a dense [T*E] tensor, so finite differences see a fixed-size output. */
function denseWeights(r: SparseRouting, T: number): Tensor {
  const flat = new Int32Array(r.tokenIdx.length);
  for (let i = 0; i < flat.length; i++) flat[i] = r.tokenIdx[i] * E + r.expertIdx[i];
  return scatterAdd(r.weights, flat, T * E);
}

function gateWeight(router: Router): Tensor {
  const p = router.namedParameters().find(([n]) => n === 'gate.weight');
  assert.ok(p, 'router has gate.weight');
  return p[1];
}

test('all six routers are registered by name', () => {
  for (const name of ['remoe', 'top-p', 'threshold', 'null-experts', 'hash', 'dense-to-sparse']) {
    assert.ok(routerRegistry.has(name), name);
    assert.ok(
      routerRegistry
        .describe()
        .find((d) => d.name === name)
        ?.description.match(/\d{4}\)$/),
      `${name} cites a year`,
    );
  }
});

test('learned routers expose logits = x W_r^T', () => {
  const x = input(5);
  for (const name of ['remoe', 'top-p', 'threshold', 'dense-to-sparse']) {
    const r = make(name);
    const out = r.route(x, ctx());
    assertClose(out.logits.data, linear(x, gateWeight(r)).data, 1e-6, 1e-6, `${name} logits`);
  }
});

// ------------------------------------------------------------------------------------------ remoe

test('remoe: exactly the positive-gate experts compute, with weight relu(logit)', () => {
  const T = 12;
  const router = make('remoe') as ReMoERouter;
  const out = router.route(input(T), ctx());
  const r = checkRecord(out, T);
  const z = out.logits.data;
  const lists = perToken(r, T);
  let active = 0;
  for (let t = 0; t < T; t++) {
    const expected = [];
    for (let e = 0; e < E; e++) if (z[t * E + e] > 0) expected.push(e);
    assert.deepEqual(lists[t], expected, `token ${t}`);
    active += expected.length;
  }
  assert.ok(active > 0 && active < T * E, 'the random init gives a mix of zero and positive gates');
  for (let i = 0; i < r.tokenIdx.length; i++) assert.equal(r.weights.data[i], z[r.tokenIdx[i] * E + r.expertIdx[i]]);
  // probs: gates normalised per token
  for (let t = 0; t < T; t++) {
    let s = 0;
    for (let e = 0; e < E; e++) {
      assert.ok(out.probs.data[t * E + e] >= 0);
      s += out.probs.data[t * E + e];
    }
    assert.ok(lists[t].length === 0 ? s === 0 : Math.abs(s - 1) < 1e-5, `probs row ${t} sums to ${s}`);
  }
  assert.equal(out.metrics.expertsPerToken, active / T);
  assert.ok(Math.abs(out.metrics.sparsity - (1 - active / (T * E))) < 1e-12);
});

function handRemoe(extra: Record<string, unknown>): { router: ReMoERouter; x: Tensor } {
  const router = routerRegistry.get('remoe')({ type: 'remoe', dModel: 2, numExperts: 3, topK: 1, l1Init: 0.5, ...extra }, new Rng(1)) as ReMoERouter;
  gateWeight(router).data.set([1, 0, 0, 1, -1, -1]);
  const x = new Tensor(new Float32Array([1, 2, -1, 0.5]), [2, 2]);
  return { router, x };
}

test('remoe: L1 loss matches a hand computation (plain and load-balanced)', () => {
  // logits: token 0 [1, 2, -3] -> gates [1, 2, 0]; token 1 [-1, 0.5, 0.5] -> [0, 0.5, 0.5]
  const { router, x } = handRemoe({});
  const out = router.route(x, ctx());
  // lambda * sum(gates) / T = 0.5 * 4 / 2
  assert.ok(Math.abs(out.losses.l1.item() - 1.0) < 1e-6, `l1 = ${out.losses.l1.item()}`);
  assert.deepEqual(out.losses.l1.shape, []);
  assert.equal(out.metrics.lambda, 0.5);
  assert.ok(Math.abs(out.metrics.sparsity - 2 / 6) < 1e-12);
  assert.deepEqual(Array.from(sparse(out).expertIdx), [0, 1, 1, 2]);

  // balanced: f_e = E / (targetK T) * count_e = 3/2 * [1, 2, 1]
  // (1*1.5 + 2*3 + 0.5*3 + 0.5*1.5) / 2 * 0.5 = 2.4375
  const b = handRemoe({ balancedL1: true });
  const outB = b.router.route(b.x, ctx());
  assert.ok(Math.abs(outB.losses.l1.item() - 2.4375) < 1e-5, `balanced l1 = ${outB.losses.l1.item()}`);

  // the loss reaches the router: d l1 / d logits = lambda / T on positive gates
  out.losses.l1.backward();
  const g = gateWeight(router).grad!;
  // dW[e] = lambda/T * sum over tokens with positive gate e of x_t: e0 <- x0, e1 <- x0 + x1, e2 <- x1
  assertClose(g, [0.25, 0.5, 0, 0.625, -0.25, 0.125], 1e-6, 1e-6, 'dl1/dW');
});

function loadOf(r: SparseRouting, n = E): Float64Array {
  const l = new Float64Array(n);
  for (let i = 0; i < r.expertIdx.length; i++) l[r.expertIdx[i]]++;
  return l;
}

test('remoe: lambda rises while routing is too dense and falls while too sparse', () => {
  const router = make('remoe', { targetK: 1, l1Init: 1e-3, alpha: 1.5 }) as ReMoERouter;
  const x = input(16);
  const lambdas = [router.lambda];
  // random init: about half the gates positive, sparsity ~0.5 < target 1 - 1/6
  for (let s = 0; s < 3; s++) {
    const out = router.route(x, ctx());
    assert.ok(out.metrics.sparsity < router.targetSparsity);
    router.afterStep(loadOf(sparse(out)));
    lambdas.push(router.lambda);
  }
  for (let s = 1; s < lambdas.length; s++) assert.ok(Math.abs(lambdas[s] / lambdas[s - 1] - 1.5) < 1e-5, `step ${s}: ${lambdas}`);
  // now make every gate zero: sparsity 1 > target, lambda falls
  gateWeight(router).data.fill(0);
  const before = router.lambda;
  for (let s = 0; s < 2; s++) {
    const out = router.route(x, ctx());
    assert.equal(sparse(out).tokenIdx.length, 0);
    assert.equal(out.metrics.sparsity, 1);
    router.afterStep(loadOf(sparse(out)));
  }
  assert.ok(Math.abs(router.lambda / before - 1 / 2.25) < 1e-5, `lambda ${before} -> ${router.lambda}`);
  // sparsity is measured over every training call of the step: two calls, one load sum
  gateWeight(router).data.set(new Rng(1).fillNormal(new Float32Array(E * D), 1));
  const a = router.route(x, ctx());
  const b = router.route(input(16, 6), ctx());
  const l = loadOf(sparse(a));
  const lb = loadOf(sparse(b));
  for (let e = 0; e < E; e++) l[e] += lb[e];
  const prev = router.lambda;
  router.afterStep(l);
  assert.ok(router.lambda > prev);
  // eval calls do not count, and an afterStep with nothing routed leaves lambda alone
  router.route(x, ctx({ training: false }));
  const kept = router.lambda;
  router.afterStep(new Float64Array(E));
  assert.equal(router.lambda, kept);
  assert.throws(() => router.afterStep(new Float64Array(E + 1)), /router "remoe": afterStep load has 7 entries, expected numExperts=6/);
  // lambda is checkpointed state, not a parameter
  assert.ok(router.stateDict().has('l1Coef'));
  assert.ok(!router.parameters().some((p) => p.size === 1));
});

// ------------------------------------------------------------------------------------------ top-p / threshold

/**
 * Brute force over all subsets: the smallest size n at which some subset's probability reaches
 * the bound, and whether a given set is one of the largest-probability sets of that size.
 */
function bruteMinSize(p: number[], reaches: (s: number) => boolean): number {
  let best = p.length;
  for (let mask = 1; mask < 1 << p.length; mask++) {
    let s = 0;
    let n = 0;
    for (let e = 0; e < p.length; e++) {
      if (mask & (1 << e)) {
        s += p[e];
        n++;
      }
    }
    if (reaches(s) && n < best) best = n;
  }
  return best;
}

function checkCumulativeRule(out: RouterOutput, T: number, reaches: (s: number) => boolean, what: string): void {
  const r = checkRecord(out, T);
  const lists = perToken(r, T);
  for (let t = 0; t < T; t++) {
    const p = Array.from(out.probs.data.subarray(t * E, t * E + E));
    const chosen = lists[t];
    const n = bruteMinSize(p, reaches);
    assert.equal(chosen.length, n, `${what} token ${t}: ${chosen.length} experts, minimal is ${n} (probs ${p.map((v) => v.toFixed(3))})`);
    // the chosen ones are the most probable: none left out beats one taken
    const minChosen = Math.min(...chosen.map((e) => p[e]));
    for (let e = 0; e < E; e++) if (!chosen.includes(e)) assert.ok(p[e] <= minChosen, `${what} token ${t}: expert ${e} skipped`);
    // listed in descending probability
    for (let j = 1; j < chosen.length; j++) assert.ok(p[chosen[j]] <= p[chosen[j - 1]]);
    const s = chosen.reduce((a, e) => a + p[e], 0);
    assert.ok(reaches(s) || chosen.length === E, `${what} token ${t}: chosen mass ${s}`);
  }
}

test('top-p: each token takes the minimal prefix whose cumulative probability reaches p (brute force)', () => {
  const T = 40;
  for (const [p, std] of [
    [0.4, 1],
    [0.7, 3],
    [0.95, 0.5],
    [0.2, 5],
    [1, 1],
  ] as const) {
    const router = make('top-p', { p });
    const out = router.route(input(T, 11, std), ctx());
    checkCumulativeRule(out, T, (s) => s >= p, `p=${p}`);
    const r = sparse(out);
    for (let i = 0; i < r.tokenIdx.length; i++) assert.equal(r.weights.data[i], out.probs.data[r.tokenIdx[i] * E + r.expertIdx[i]]);
    assert.equal(out.metrics.expertsPerToken, r.tokenIdx.length / T);
  }
  // probs are a softmax of the logits
  const out = make('top-p').route(input(4), ctx());
  assertClose(out.probs.data, softmax(out.logits.detach()).data, 1e-7, 1e-6, 'probs');
});

test('top-p: maxK caps, normalize renormalises, dynamic loss is the scaled mean entropy', () => {
  const T = 30;
  const x = input(T, 3, 0.3); // flat distributions need many experts
  const capped = make('top-p', { p: 0.9, maxK: 2 }).route(x, ctx());
  assert.ok(perToken(sparse(capped), T).every((l) => l.length >= 1 && l.length <= 2));
  assert.equal(capped.metrics.maxExpertsPerToken, 2);

  const norm = make('top-p', { p: 0.6, normalize: true }).route(x, ctx());
  const sums = new Float64Array(T);
  const r = sparse(norm);
  for (let i = 0; i < r.tokenIdx.length; i++) sums[r.tokenIdx[i]] += r.weights.data[i];
  for (let t = 0; t < T; t++) assert.ok(Math.abs(sums[t] - 1) < 1e-5, `token ${t} weights sum to ${sums[t]}`);

  const out = make('top-p', { dynamicLossCoef: 0.01 }).route(x, ctx());
  let h = 0;
  for (let i = 0; i < out.probs.size; i++) h -= out.probs.data[i] * Math.log(out.probs.data[i]);
  assert.ok(Math.abs(out.losses.dynamic.item() - (0.01 * h) / T) < 1e-7, `dynamic ${out.losses.dynamic.item()} vs ${(0.01 * h) / T}`);
  assert.deepEqual(Object.keys(make('top-p', { dynamicLossCoef: 0 }).route(x, ctx()).losses), []);
});

test('threshold: minimal prefix whose cumulative probability exceeds t, raw probs, first picks first', () => {
  const T = 40;
  for (const [t, std] of [
    [0.9, 1],
    [0.5, 3],
    [0.05, 1],
    [0.99, 0.5],
  ] as const) {
    const out = make('threshold', { threshold: t }).route(input(T, 12, std), ctx());
    checkCumulativeRule(out, T, (s) => s > t, `t=${t}`);
    const r = sparse(out);
    for (let i = 0; i < r.tokenIdx.length; i++) assert.equal(r.weights.data[i], out.probs.data[r.tokenIdx[i] * E + r.expertIdx[i]]);
    // every token's first pick outranks every token's later picks
    const first: number[] = [];
    const later: number[] = [];
    for (let i = 0; i < r.tokenIdx.length; i++) (i === 0 || r.tokenIdx[i] !== r.tokenIdx[i - 1] ? first : later).push(r.priority![i]);
    if (later.length) assert.ok(Math.min(...first) > Math.max(...later));
  }
});

test('threshold differs from top-p at the boundary: "exceeds" vs "reaches"', () => {
  // equal logits: two experts at exactly 0.5 each (exact in float32)
  const base = { dModel: D, numExperts: 2, topK: 1 };
  const th = routerRegistry.get('threshold')({ type: 'threshold', ...base, threshold: 0.5 }, new Rng(1));
  const tp = routerRegistry.get('top-p')({ type: 'top-p', ...base, p: 0.5 }, new Rng(1));
  gateWeight(th).data.fill(0);
  gateWeight(tp).data.fill(0);
  const x = input(3);
  assert.equal(sparse(th.route(x, ctx())).tokenIdx.length, 6, 'threshold takes both (0.5 does not exceed 0.5)');
  assert.equal(sparse(tp.route(x, ctx())).tokenIdx.length, 3, 'top-p stops at 0.5 >= 0.5');
});

// ------------------------------------------------------------------------------------------ null experts

test('null-experts: null slots are never listed, skip compute, and nullFraction counts them', () => {
  const T = 20;
  const k = 3;
  const router = make('null-experts', { numNull: 4 }, k) as NullExpertsRouter;
  assert.deepEqual(gateWeight(router).shape, [E + 4, D]);
  // raise some null rows so a good share of slots goes to nulls
  const w = gateWeight(router).data;
  const x = input(T);
  for (let j = 0; j < D; j++) w[(E + 1) * D + j] += 0.8 * Math.sign(x.data[j]);
  const out = router.route(x, ctx());
  const r = checkRecord(out, T);

  // reference: softmax over all E + 4, top-k, renormalised over the k slots
  const all = softmax(linear(x, gateWeight(router).detach())).data;
  let nullSlots = 0;
  const expected: { t: number; e: number; w: number }[] = [];
  for (let t = 0; t < T; t++) {
    const row = Array.from(all.subarray(t * (E + 4), (t + 1) * (E + 4)));
    const order = row
      .map((_, i) => i)
      .sort((a, b) => row[b] - row[a] || a - b)
      .slice(0, k);
    const mass = order.reduce((s, i) => s + row[i], 0);
    for (const i of order) {
      if (i >= E) nullSlots++;
      else expected.push({ t, e: i, w: row[i] / mass });
    }
  }
  assert.ok(nullSlots > 0 && nullSlots < T * k, `test needs a mix of null and real slots, got ${nullSlots}`);
  assert.equal(r.tokenIdx.length, T * k - nullSlots, 'fewer assignments than T*k: null slots cost nothing');
  assert.deepEqual(
    Array.from(r.tokenIdx),
    expected.map((a) => a.t),
  );
  assert.deepEqual(
    Array.from(r.expertIdx),
    expected.map((a) => a.e),
  );
  assertClose(
    r.weights.data,
    expected.map((a) => a.w),
    1e-6,
    1e-5,
    'weights',
  );
  assert.ok(Math.abs(out.metrics.nullFraction - nullSlots / (T * k)) < 1e-12);
  assert.ok(Math.abs(out.metrics.realExpertsPerToken - r.tokenIdx.length / T) < 1e-12);
  // logits/probs: the real columns of the full logits/softmax
  for (let t = 0; t < T; t++) {
    for (let e = 0; e < E; e++) assert.ok(Math.abs(out.probs.data[t * E + e] - all[t * (E + 4) + e]) < 1e-7);
  }
  // numNull 0 is plain renormalised top-k: always k real experts
  const plain = make('null-experts', { numNull: 0 }, 2).route(x, ctx());
  assert.equal(sparse(plain).tokenIdx.length, T * 2);
  assert.equal(plain.metrics.nullFraction, 0);
  // k may exceed E once nulls exist
  assert.equal((make('null-experts', {}, E + 2) as NullExpertsRouter).topK, E + 2);
});

// ------------------------------------------------------------------------------------------ hash

test('hash: fixed experts per token id, no learned parameters, constant weights', () => {
  const router = make('hash', {}, 2) as HashRouter;
  assert.equal(router.numParameters(), 0);
  const T = 64;
  const ids = new Int32Array(T);
  for (let t = 0; t < T; t++) ids[t] = (t * 7) % 10; // repeated ids at different positions
  const out = router.route(input(T), ctx({ tokenIds: ids }));
  const r = checkRecord(out, T);
  const lists = perToken(r, T);
  const byId = new Map<number, number[]>();
  for (let t = 0; t < T; t++) {
    assert.equal(lists[t].length, 2);
    assert.notEqual(lists[t][0], lists[t][1], 'k hashes give distinct experts');
    const prev = byId.get(ids[t]);
    if (prev) assert.deepEqual(lists[t], prev, `token id ${ids[t]}`);
    else byId.set(ids[t], lists[t]);
    for (let e = 0; e < E; e++) {
      const on = lists[t].includes(e);
      assert.equal(out.logits.data[t * E + e], on ? 1 : 0);
      assert.equal(out.probs.data[t * E + e], on ? 0.5 : 0);
    }
  }
  assert.ok(r.weights.data.every((v) => v === 0.5));
  assert.equal(r.weights.requiresGrad, false);
  assert.equal(out.probs.requiresGrad, false);
  // same ids again (another call, eval mode): same experts
  const again = router.route(input(T, 9), ctx({ tokenIds: ids, training: false }));
  assert.deepEqual(Array.from(sparse(again).expertIdx), Array.from(r.expertIdx));
  // k = E uses every expert exactly once
  const full = make('hash', {}, E).route(input(3), ctx({ tokenIds: new Int32Array([5, 6, 7]) }));
  for (const l of perToken(sparse(full), 3)) assert.deepEqual([...l].sort(), [0, 1, 2, 3, 4, 5]);
});

test('hash: deterministic per seed, spread over experts, seed kept in the state dict', () => {
  const n = 6000;
  const ids = Int32Array.from({ length: n }, (_, i) => i);
  const x = new Tensor(new Float32Array(n * D), [n, D]);
  const route = (r: Router) => Array.from(sparse(r.route(x, ctx({ tokenIds: ids }))).expertIdx);
  const a = route(make('hash', {}, 1, 3));
  assert.deepEqual(route(make('hash', {}, 1, 3)), a, 'same construction seed');
  const b = route(make('hash', {}, 1, 4));
  assert.ok(a.filter((v, i) => v !== b[i]).length > n / 2, 'another seed gives another hash');
  assert.deepEqual(route(make('hash', { seed: 42 }, 1, 3)), route(make('hash', { seed: 42 }, 1, 8)), 'explicit seed wins');
  const counts = new Array(E).fill(0);
  for (const e of a) counts[e]++;
  for (const c of counts) assert.ok(Math.abs(c - n / E) < 0.1 * (n / E), `loads ${counts}`);
  // loading a checkpoint restores the hash
  const src = make('hash', {}, 1, 3);
  const dst = make('hash', {}, 1, 4);
  dst.loadStateDict(src.stateDict());
  assert.deepEqual(route(dst), a);
});

test('hash: clear errors for missing or malformed token ids', () => {
  const router = make('hash');
  assert.throws(() => router.route(input(3), ctx()), /router "hash": ctx\.tokenIds is required/);
  assert.throws(() => router.route(input(3), ctx({ tokenIds: new Int32Array(2) })), /router "hash": ctx\.tokenIds has 2 ids but the input has 3 tokens/);
  assert.throws(() => router.route(input(2), ctx({ tokenIds: new Int32Array([1, -4]) })), /router "hash": ctx\.tokenIds\[1\] = -4 is negative/);
});

// ------------------------------------------------------------------------------------------ dense-to-sparse

test('dense-to-sparse: dense at step 0, exactly topK after annealSteps, final top-k in eval', () => {
  const T = 10;
  const router = make('dense-to-sparse', { annealSteps: 100 }, 2) as DenseToSparseRouter;
  const x = input(T);
  const at = (step: number, training = true) => router.route(x, ctx({ step, training }));

  const s0 = at(0);
  const r0 = checkRecord(s0, T);
  assert.equal(s0.metrics.activeK, E);
  assert.equal(s0.metrics.temperature, 2);
  for (const l of perToken(r0, T)) assert.equal(l.length, E, 'every expert active at step 0');
  // weights: the noisy tempered gate (rows of a softmax), summing to 1 when dense
  const sums = new Float64Array(T);
  for (let i = 0; i < r0.tokenIdx.length; i++) sums[r0.tokenIdx[i]] += r0.weights.data[i];
  for (const s of sums) assert.ok(Math.abs(s - 1) < 1e-5);

  let prevK = E;
  let prevTemp = Infinity;
  for (const step of [10, 30, 50, 70, 99]) {
    const o = at(step);
    assert.ok(o.metrics.activeK <= prevK && o.metrics.activeK >= 2);
    assert.ok(o.metrics.temperature < prevTemp);
    for (const l of perToken(sparse(o), T)) assert.equal(l.length, o.metrics.activeK);
    prevK = o.metrics.activeK;
    prevTemp = o.metrics.temperature;
  }
  for (const step of [100, 500]) {
    const o = at(step);
    assert.equal(o.metrics.activeK, 2);
    assert.ok(Math.abs(o.metrics.temperature - 0.3) < 1e-12);
    for (const l of perToken(sparse(o), T)) assert.equal(l.length, 2);
  }
  // eval: no noise, end of the schedule whatever the step
  const ev = at(0, false);
  assert.equal(ev.metrics.activeK, 2);
  assertClose(
    ev.probs.data,
    softmax(
      new Tensor(
        ev.logits.data.map((v) => v / 0.3),
        [T, E],
      ),
    ).data,
    1e-6,
    1e-5,
    'eval probs',
  );
  const top = perToken(sparse(ev), T);
  for (let t = 0; t < T; t++) {
    const z = Array.from(ev.logits.data.subarray(t * E, (t + 1) * E));
    const best = z
      .map((_, i) => i)
      .sort((a, b) => z[b] - z[a] || a - b)
      .slice(0, 2);
    assert.deepEqual(top[t], best);
  }
  // deterministic per seed: the Gumbel noise comes from ctx.rng
  const a = router.route(x, ctx({ step: 40, rng: new Rng(3) }));
  const b = router.route(x, ctx({ step: 40, rng: new Rng(3) }));
  const c = router.route(x, ctx({ step: 40, rng: new Rng(4) }));
  assert.deepEqual(Array.from(a.probs.data), Array.from(b.probs.data));
  assert.notDeepEqual(Array.from(a.probs.data), Array.from(c.probs.data));
});

test('dense-to-sparse: annealSteps defaults to ctx.totalSteps, then 1000', () => {
  const router = make('dense-to-sparse', {}, 1) as DenseToSparseRouter;
  const x = input(4);
  assert.equal(router.route(x, ctx({ step: 20, totalSteps: 20 })).metrics.activeK, 1);
  assert.equal(router.route(x, ctx({ step: 20 })).metrics.activeK, 1 + Math.ceil((E - 1) * (1 - 20 / 1000)));
  assert.equal(router.route(x, ctx({ step: 1000 })).metrics.activeK, 1);
});

// ------------------------------------------------------------------------------------------ gradients

test('combine weights are differentiable w.r.t. the router weights (finite differences)', () => {
  const T = 6;
  const cases: [string, Record<string, unknown>, number, Partial<RouterContext>][] = [
    ['remoe', {}, 2, {}],
    ['top-p', { p: 0.6 }, 2, {}],
    ['top-p', { p: 0.6, normalize: true }, 2, {}],
    ['threshold', { threshold: 0.8 }, 2, {}],
    ['null-experts', { numNull: 3 }, 3, {}],
    ['dense-to-sparse', { annealSteps: 10 }, 2, { step: 4 }],
    ['dense-to-sparse', { annealSteps: 10 }, 2, { training: false }],
  ];
  for (const [name, extra, k, over] of cases) {
    const router = make(name, extra, k, 21);
    const x = input(T, 22);
    const W = gateWeight(router);
    // a fresh Rng per call: the Gumbel noise is the same in every finite-difference evaluation
    const fn = () => denseWeights(sparse(router.route(x, ctx({ ...over, rng: new Rng(8) }))), T);
    const rep = gradcheck(`${name} ${JSON.stringify(extra)} weights`, fn, [W], { eps: 1e-3, atol: 1e-3, rtol: 1e-2 });
    assert.equal(rep.checked, W.size);
  }
});

// ------------------------------------------------------------------------------------------ errors

test('bad options and inputs give errors naming the router and the option', () => {
  const bad: [string, Record<string, unknown>, RegExp, number?][] = [
    ['remoe', { lambda: 1 }, /router "remoe": unknown option "lambda" \(known: targetK, l1Init, alpha, balancedL1\)/],
    ['remoe', { alpha: 1 }, /router "remoe": option alpha must be a finite number > 1, got 1/],
    ['remoe', { targetK: 7 }, /router "remoe": option targetK must be a number in \(0, numExperts=6\]/],
    ['remoe', { l1Init: -1 }, /router "remoe": option l1Init must be a positive finite number/],
    ['remoe', { balancedL1: 'yes' }, /router "remoe": option balancedL1 must be true or false/],
    ['top-p', { p: 0 }, /router "top-p": option p must be a number in \(0, 1\], got 0/],
    ['top-p', { p: '0.5' }, /router "top-p": option p must be a number in \(0, 1\], got "0.5"/],
    ['top-p', { maxK: 7 }, /router "top-p": option maxK must be an integer in \[1, numExperts=6\]/],
    ['top-p', { threshold: 0.5 }, /router "top-p": unknown option "threshold"/],
    ['top-p', { dynamicLossCoef: -1 }, /router "top-p": option dynamicLossCoef must be a finite number >= 0/],
    ['threshold', { threshold: 1.5 }, /router "threshold": option threshold must be a number in \(0, 1\]/],
    ['threshold', { p: 0.5 }, /router "threshold": unknown option "p"/],
    ['null-experts', { numNull: -1 }, /router "null-experts": option numNull must be an integer >= 0/],
    ['null-experts', { numNull: 2 }, /router "null-experts": topK must be an integer in \[1, numExperts \+ numNull = 8\], got 9/, 9],
    ['hash', { seed: 1.5 }, /router "hash": option seed must be an integer in \[0, 16777216\)/],
    ['hash', { vocab: 10 }, /router "hash": unknown option "vocab"/],
    ['dense-to-sparse', { endTemp: 3 }, /router "dense-to-sparse": option endTemp must be a positive number <= startTemp \(2\)/],
    ['dense-to-sparse', { annealSteps: 0 }, /router "dense-to-sparse": option annealSteps must be a positive integer/],
    ['dense-to-sparse', { startTemp: 0 }, /router "dense-to-sparse": option startTemp must be a positive finite number/],
    ['top-p', {}, /router "top-p": topK must be an integer in \[1, numExperts=6\]/, 0],
  ];
  for (const [name, extra, re, k] of bad) assert.throws(() => make(name, extra, k ?? 2), re, `${name} ${JSON.stringify(extra)}`);
  for (const name of ['remoe', 'top-p', 'threshold', 'null-experts', 'hash', 'dense-to-sparse']) {
    const r = make(name);
    assert.throws(() => r.route(randn(new Rng(1), [3, D + 1], false), ctx({ tokenIds: new Int32Array(3) })), new RegExp(`router "${name}": input must be \\[tokens, ${D}\\], got`));
  }
});

// ------------------------------------------------------------------------------------------ through the MoE layer

test('each router runs through MoELayer: losses, metrics, backward to the router', () => {
  const T = 12;
  const ids = Int32Array.from({ length: T }, (_, i) => (i * 5) % 7);
  for (const [type, topK] of [
    ['remoe', 2],
    ['top-p', 2],
    ['threshold', 2],
    ['null-experts', 3],
    ['hash', 2],
    ['dense-to-sparse', 2],
  ] as const) {
    const layer = new MoELayer(
      { dModel: D, numExperts: E, topK, experts: { type: 'gelu', dFF: 8 }, router: { type }, losses: { switch: 0.01, zloss: 1e-3, importance: 0.01, entropy: 0.01 } },
      new Rng(3),
    );
    const x = input(T, 4);
    const { y, aux } = layer.forward(x, ctx({ tokenIds: ids, step: 5, totalSteps: 50 }));
    assert.deepEqual(y.shape, [T, D]);
    const r = sparse(aux.router);
    assert.ok(Math.abs(aux.metrics.expertsPerToken - r.tokenIdx.length / T) < 1e-12, type);
    for (const [name, l] of Object.entries(aux.losses)) assert.ok(Number.isFinite(l.item()), `${type} loss ${name}`);
    let L = sum(mul(y, randn(new Rng(2), [T, D], false)));
    for (const l of Object.values(aux.losses)) if (l.requiresGrad) L = add(L, l);
    L.backward();
    for (const [name, p] of layer.namedParameters()) {
      if (p.grad) assert.ok(p.grad.every(Number.isFinite), `${type}: gradient of ${name} is finite`);
    }
    if (type !== 'hash') {
      const g = layer.namedParameters().find(([n]) => n === 'router.gate.weight')![1].grad;
      assert.ok(g && g.some((v) => v !== 0), `${type}: gradient reaches the router`);
    }
    layer.afterStep();
  }
});

test('remoe: training with the adaptive L1 drives experts per token toward targetK', () => {
  const T = 32;
  const layer = new MoELayer({ dModel: D, numExperts: E, topK: 1, experts: { type: 'gelu', dFF: 8 }, router: { type: 'remoe', l1Init: 1e-3, alpha: 1.3 } }, new Rng(3));
  const router = layer.router as ReMoERouter;
  const opt = new AdamW(layer.parameters(), { lr: 2e-2 });
  // hidden states with a non-zero mean (as real ones have): a bias-free gate on zero-mean isotropic
  // inputs is positive on about half the tokens whatever its weights, so no sparsity is reachable
  const x = input(T, 4, 0.5);
  for (let i = 0; i < x.size; i++) x.data[i] += 1;
  const target = randn(new Rng(7), [T, D], false);
  const perToken: number[] = [];
  let rises = 0;
  let falls = 0;
  for (let step = 0; step < 80; step++) {
    layer.zeroGrad();
    const { y, aux } = layer.forward(x, ctx({ step }));
    perToken.push(aux.metrics.expertsPerToken);
    const diff = sub(y, target);
    const L = add(scale(sum(mul(diff, diff)), 1 / T), aux.losses.l1);
    L.backward();
    opt.step();
    const before = router.lambda;
    const sparsity = aux.router.metrics.sparsity;
    layer.afterStep();
    // the direction of every update follows the sign of the sparsity gap
    if (sparsity < router.targetSparsity) {
      assert.ok(router.lambda > before, `step ${step}: too dense, lambda must rise`);
      rises++;
    } else if (sparsity > router.targetSparsity) {
      assert.ok(router.lambda < before, `step ${step}: too sparse, lambda must fall`);
      falls++;
    }
  }
  assert.ok(rises > 0 && falls > 0, `lambda rose (${rises}) and fell (${falls})`);
  const last = perToken.slice(-10).reduce((a, b) => a + b, 0) / 10;
  assert.ok(Math.abs(last - 1) < Math.abs(perToken[0] - 1) / 2, `experts per token ${perToken[0]} -> ${last} (target 1)`);
});
