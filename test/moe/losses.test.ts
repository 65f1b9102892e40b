import { test } from 'node:test';
import assert from 'node:assert/strict';
import '../../src/kernels/index.js';
import { Tensor, noGrad, zeros } from '../../src/tensor/tensor.js';
import { Rng } from '../../src/tensor/random.js';
import { softmax } from '../../src/tensor/index.js';
import type { RouterOutput } from '../../src/moe/types.js';
import { lossRegistry, smoothLoadProbs } from '../../src/moe/losses/index.js';
import { routerRegistry } from '../../src/moe/routers/index.js';
import type { TopKRouter } from '../../src/moe/routers/topk.js';
import type { RouterOutputWithNoise, NoisyGatingStats } from '../../src/moe/routers/common.js';

const loss = (name: string) => lossRegistry.get(name);

function randn(shape: number[], seed: number, std = 1, requiresGrad = true): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  return new Tensor(new Rng(seed).fillNormal(new Float32Array(n), std), shape, requiresGrad);
}

/** A sparse routing record built the way softmax routers build it: probs = softmax(logits), once. */
function sparseOut(logits: Tensor, expertIdx: number[], k: number): RouterOutput {
  const tokenIdx = Int32Array.from(expertIdx.map((_, i) => Math.floor(i / k)));
  return {
    logits,
    probs: softmax(logits, -1),
    routing: { kind: 'sparse', tokenIdx, expertIdx: Int32Array.from(expertIdx), weights: zeros([expertIdx.length]) },
    losses: {},
    metrics: {},
  };
}

/** Float64 softmax rows computed by hand. */
function probsByHand(l: Tensor): number[][] {
  const [T, E] = l.shape;
  const rows: number[][] = [];
  for (let t = 0; t < T; t++) {
    const r = Array.from(l.data.subarray(t * E, t * E + E));
    const m = Math.max(...r);
    const ex = r.map((v) => Math.exp(v - m));
    const s = ex.reduce((a, b) => a + b, 0);
    rows.push(ex.map((v) => v / s));
  }
  return rows;
}

function cv2(v: number[]): number {
  const m = v.reduce((a, b) => a + b, 0) / v.length;
  return v.reduce((a, b) => a + (b - m) ** 2, 0) / v.length / (m * m + 1e-10);
}

function close(a: number, b: number, tol = 1e-5, what = 'value'): void {
  assert.ok(Math.abs(a - b) <= tol * Math.max(1, Math.abs(b)), `${what}: got ${a}, expected ${b}`);
}

/** Central finite differences of a scalar loss against autograd, for every element of `params`. */
function fdCheck(what: string, fn: () => Tensor, params: Tensor[], eps = 1e-3, atol = 1e-3, rtol = 2e-2): void {
  for (const p of params) p.grad = null;
  const out = fn();
  assert.equal(out.size, 1);
  out.backward();
  params.forEach((p, k) => {
    assert.ok(p.grad, `${what}: input ${k} got no gradient`);
    for (let i = 0; i < p.size; i++) {
      const orig = p.data[i];
      p.data[i] = orig + eps;
      const hi = p.data[i] - orig;
      const lp = noGrad(() => fn().item());
      p.data[i] = orig - eps;
      const lo = orig - p.data[i];
      const lm = noGrad(() => fn().item());
      p.data[i] = orig;
      const num = (lp - lm) / (hi + lo);
      const an = p.grad![i];
      assert.ok(Math.abs(an - num) <= atol + rtol * Math.max(Math.abs(an), Math.abs(num)), `${what}: input ${k} element ${i}: analytic ${an}, numeric ${num}`);
    }
    p.grad = null;
  });
}

const info = (T: number, E: number, k: number) => ({ numExperts: E, tokens: T, topK: k });

test('loss registry holds every balancing loss', () => {
  for (const n of ['switch', 'importance', 'load', 'zloss', 'entropy', 'entropy-global']) assert.ok(lossRegistry.has(n), n);
});

test('switch loss: exactly 1 for uniform routing, for k = 1 and k = 2', () => {
  const u1 = sparseOut(zeros([4, 4], true), [0, 1, 2, 3], 1);
  assert.equal(loss('switch')(u1, info(4, 4, 1)).item(), 1);
  const u2 = sparseOut(zeros([4, 4], true), [0, 1, 2, 3, 0, 1, 2, 3], 2);
  assert.equal(loss('switch')(u2, info(4, 4, 2)).item(), 1);
  // the Switch router makes one assignment per token whatever the layer's topK says
  assert.equal(loss('switch')(u1, info(4, 4, 2)).item(), 1);
});

test('switch loss: hand-computed value from softmax(logits), gradient through P only', () => {
  const T = 5,
    E = 3,
    k = 2;
  const logits = randn([T, E], 1);
  const ex = [0, 1, 0, 2, 1, 0, 0, 1, 2, 0];
  const p = probsByHand(logits);
  const f = [0, 0, 0];
  for (const e of ex) f[e] += 1 / (T * k);
  let want = 0;
  for (let e = 0; e < E; e++) want += f[e] * (p.reduce((a, r) => a + r[e], 0) / T);
  want *= E;
  close(loss('switch')(sparseOut(logits, ex, k), info(T, E, k)).item(), want, 1e-6, 'switch loss');
  fdCheck('switch', () => loss('switch')(sparseOut(logits, ex, k), info(T, E, k)), [logits]);
});

test('importance loss: CV^2 of per-expert summed probabilities', () => {
  const T = 6,
    E = 4;
  const logits = randn([T, E], 2);
  const p = probsByHand(logits);
  const imp = [0, 1, 2, 3].map((e) => p.reduce((a, r) => a + r[e], 0));
  const ex = [0, 1, 2, 3, 0, 1];
  close(loss('importance')(sparseOut(logits, ex, 1), info(T, E, 1)).item(), cv2(imp), 1e-5, 'importance');
  assert.ok(Math.abs(loss('importance')(sparseOut(zeros([T, E], true), ex, 1), info(T, E, 1)).item()) < 1e-9, 'uniform -> 0');
  fdCheck('importance', () => loss('importance')(sparseOut(logits, ex, 1), info(T, E, 1)), [logits]);
});

test('load loss without noise stats: CV^2 of the probability-weighted assignment counts', () => {
  const T = 4,
    E = 3,
    k = 2;
  const logits = randn([T, E], 3);
  const ex = [0, 1, 0, 2, 1, 0, 0, 1];
  const p = probsByHand(logits);
  const load = [0, 0, 0];
  ex.forEach((e, i) => (load[e] += p[Math.floor(i / k)][e]));
  close(loss('load')(sparseOut(logits, ex, k), info(T, E, k)).item(), cv2(load), 1e-5, 'soft load');
  fdCheck('load (soft)', () => loss('load')(sparseOut(logits, ex, k), info(T, E, k)), [logits]);
});

/** erf by its Maclaurin series (independent of the implementation's rational approximation). */
function erfSeries(x: number): number {
  let term = x;
  let s = x;
  for (let n = 1; n < 60; n++) {
    term *= (-x * x) / n;
    s += term / (2 * n + 1);
  }
  return (2 / Math.sqrt(Math.PI)) * s;
}
const Phi = (z: number): number => 0.5 * (1 + erfSeries(z / Math.SQRT2));

test('load loss with noisy gating stats: the smooth estimator of Shazeer et al. (hand-computed)', () => {
  const k = 1;
  const clean = new Tensor(Float32Array.from([0.2, -0.1, 0.5, 0.0, 0.3, -0.4]), [2, 3], true);
  const noisy = new Tensor(Float32Array.from([0.9, -0.3, 0.4, -0.2, 0.1, 0.6]), [2, 3], true);
  const std = new Tensor(Float32Array.from([0.5, 0.7, 0.6, 0.8, 0.4, 0.9]), [2, 3], true);
  const stats: NoisyGatingStats = { clean, noisy, noiseStd: std, k };
  // token 0: noisy top-1 is expert 0 (0.9); 2nd largest 0.4. In-expert 0 compares to 0.4, others to 0.9.
  // token 1: top-1 is expert 2 (0.6); 2nd largest 0.1.
  const thr = [
    [0.4, 0.9, 0.9],
    [0.6, 0.6, 0.1],
  ];
  const P = [0, 1].map((t) => [0, 1, 2].map((e) => Phi((clean.data[t * 3 + e] - thr[t][e]) / std.data[t * 3 + e])));
  const got = smoothLoadProbs(stats);
  for (let i = 0; i < 6; i++) close(got.data[i], P[Math.floor(i / 3)][i % 3], 1e-6, `P[${i}]`);
  const out: RouterOutputWithNoise = { ...sparseOut(noisy, [0, 2], 1), noisyGating: stats };
  const load = [0, 1, 2].map((e) => P[0][e] + P[1][e]);
  close(loss('load')(out, info(2, 3, 1)).item(), cv2(load), 1e-5, 'smooth load loss');
  fdCheck('load (smooth)', () => loss('load')({ ...sparseOut(noisy, [0, 2], 1), noisyGating: stats } as RouterOutputWithNoise, info(2, 3, 1)), [clean, noisy, std]);
});

test('load loss on a noisy topk router reaches the noise projection', () => {
  const r = routerRegistry.get('topk')({ type: 'topk', dModel: 4, numExperts: 4, topK: 2, noisyGating: true }, new Rng(1)) as TopKRouter;
  const x = randn([8, 4], 5, 1, false);
  const out = r.route(x, { training: true, step: 0, rng: new Rng(2) });
  const l = loss('load')(out, info(8, 4, 2));
  assert.ok(Number.isFinite(l.item()) && l.item() > 0);
  l.backward();
  assert.ok(r.noise!.weight.grad && r.noise!.weight.grad.some((g) => g !== 0), 'gradient reaches W_noise');
  assert.ok(r.gate.weight.grad && r.gate.weight.grad.some((g) => g !== 0), 'gradient reaches W_g');
});

test('z-loss: mean over tokens of logsumexp(logits)^2', () => {
  const T = 4,
    E = 5;
  const logits = randn([T, E], 6, 2);
  let want = 0;
  for (let t = 0; t < T; t++) {
    let s = 0;
    for (let e = 0; e < E; e++) s += Math.exp(logits.data[t * E + e]);
    want += Math.log(s) ** 2 / T;
  }
  close(loss('zloss')(sparseOut(logits, [0, 1, 2, 3], 1), info(T, E, 1)).item(), want, 1e-5, 'zloss');
  fdCheck('zloss', () => loss('zloss')(sparseOut(logits, [0, 1, 2, 3], 1), info(T, E, 1)), [logits]);
});

test('entropy losses: local = mean token entropy, global = minus the entropy of the mean', () => {
  const T = 3,
    E = 4;
  close(loss('entropy')(sparseOut(zeros([T, E], true), [0, 1, 2], 1), info(T, E, 1)).item(), Math.log(E), 1e-6, 'uniform local entropy');
  const logits = randn([T, E], 7, 1.5);
  const p = probsByHand(logits);
  const H = (q: number[]) => -q.reduce((a, v) => a + (v > 0 ? v * Math.log(v) : 0), 0);
  const local = p.reduce((a, r) => a + H(r), 0) / T;
  const mean = [0, 1, 2, 3].map((e) => p.reduce((a, r) => a + r[e], 0) / T);
  close(loss('entropy')(sparseOut(logits, [0, 1, 2], 1), info(T, E, 1)).item(), local, 1e-5, 'local entropy');
  close(loss('entropy-global')(sparseOut(logits, [0, 1, 2], 1), info(T, E, 1)).item(), -H(mean), 1e-5, 'global entropy');
  fdCheck('entropy', () => loss('entropy')(sparseOut(logits, [0, 1, 2], 1), info(T, E, 1)), [logits]);
  fdCheck('entropy-global', () => loss('entropy-global')(sparseOut(logits, [0, 1, 2], 1), info(T, E, 1)), [logits]);
});

test('soft routing: assignment-based losses are 0, z-loss still applies', () => {
  const r = routerRegistry.get('soft')({ type: 'soft', dModel: 4, numExperts: 3, topK: 1, slotsPerExpert: 2 }, new Rng(1));
  const out = r.route(randn([5, 4], 8, 1, false), { training: true, step: 0, rng: new Rng(1) });
  for (const n of ['switch', 'importance', 'load', 'entropy', 'entropy-global']) assert.equal(loss(n)(out, info(5, 3, 1)).item(), 0, n);
  assert.ok(loss('zloss')(out, info(5, 3, 1)).item() > 0);
});

test('losses reject routing records whose shapes disagree with the layer info', () => {
  const out = sparseOut(randn([4, 3], 9), [0, 1, 2, 0], 1);
  assert.throws(() => loss('switch')(out, info(4, 5, 1)), /loss "switch": router probs has shape \[4, 3\], expected \[4, 5\]/);
  assert.throws(() => loss('zloss')(out, info(6, 3, 1)), /loss "zloss"/);
});
