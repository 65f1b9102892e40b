/**
 * The Mamba ops (src/tensor/ops/ssm_ops.ts): the fused selective scan and causal depthwise
 * conv1d against naive per-step references built from plain autograd ops (values and
 * gradients), finite-difference gradient checks on tiny sizes, splitting a sequence in two with
 * the carried state equal to one pass, and one-line errors for malformed shapes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Tensor } from '../../src/tensor/tensor.js';
import { Rng } from '../../src/tensor/random.js';
import * as T from '../../src/tensor/index.js';
import { gradcheck, randn, assertClose } from '../helpers/gradcheck.js';

/** One pass of the recurrence with one tensor op per time step: the semantics spelled out. */
function naiveScan(u: Tensor, dt: Tensor, aLog: Tensor, bm: Tensor, cm: Tensor, dSkip: Tensor, B: number, L: number, h0?: Float32Array): Tensor {
  const D = u.shape[1];
  const N = aLog.shape[1];
  const at = (x: Tensor, t: number, w: number, shape: number[]): Tensor => T.reshape(T.slice(T.reshape(x, [B, L, w]), 1, t, t + 1), shape);
  const A = T.reshape(T.neg(T.exp(aLog)), [1, D, N]);
  let h: Tensor = new Tensor(h0 ? h0.slice() : new Float32Array(B * D * N), [B, D, N]);
  const ys: Tensor[] = [];
  for (let t = 0; t < L; t++) {
    const delta = T.log(T.addScalar(T.exp(at(dt, t, D, [B, D, 1])), 1)); // softplus
    const ut = at(u, t, D, [B, D, 1]);
    const bt = at(bm, t, N, [B, 1, N]);
    const ct = at(cm, t, N, [B, 1, N]);
    h = T.add(T.mul(T.exp(T.mul(delta, A)), h), T.mul(T.mul(delta, ut), bt));
    const y = T.add(T.sum(T.mul(h, ct), 2), T.mul(T.reshape(ut, [B, D]), T.reshape(dSkip, [1, D])));
    ys.push(T.reshape(y, [B, 1, D]));
  }
  return T.reshape(T.concat(ys, 1), [B * L, D]);
}

function scanInputs(rng: Rng, B: number, L: number, D: number, N: number): Tensor[] {
  return [randn(rng, [B * L, D]), randn(rng, [B * L, D], true, 0.7), randn(rng, [D, N], true, 0.5), randn(rng, [B * L, N]), randn(rng, [B * L, N]), randn(rng, [D])];
}

/** Gradients of sum(y * w) for a fixed random w, for every input. */
function grads(fn: (...xs: Tensor[]) => Tensor, xs: Tensor[], w: Float32Array): Float32Array[] {
  for (const x of xs) x.grad = null;
  const y = fn(...xs);
  T.sum(T.mul(y, new Tensor(w, y.shape))).backward();
  return xs.map((x) => x.grad!.slice());
}

test('selectiveScan equals the per-step recurrence, values and every gradient', () => {
  const rng = new Rng(3);
  const [B, L, D, N] = [2, 5, 3, 4];
  const xs = scanInputs(rng, B, L, D, N);
  const h0 = rng.fillNormal(new Float32Array(B * D * N));
  const fused = (...a: Tensor[]) => T.selectiveScan(a[0], a[1], a[2], a[3], a[4], a[5], B, L, { h0 });
  const naive = (...a: Tensor[]) => naiveScan(a[0], a[1], a[2], a[3], a[4], a[5], B, L, h0);
  assertClose(fused(...xs).data, naive(...xs).data, 1e-5, 1e-4, 'y');
  const w = rng.fillNormal(new Float32Array(B * L * D));
  const gf = grads(fused, xs, w);
  const gn = grads(naive, xs, w);
  ['u', 'dt', 'aLog', 'B', 'C', 'D'].forEach((name, i) => assertClose(gf[i], gn[i], 1e-4, 1e-3, `grad ${name}`));
});

test('selectiveScan gradients match finite differences (tiny sizes, with and without an initial state)', () => {
  const rng = new Rng(5);
  const [B, L, D, N] = [2, 3, 2, 3];
  const h0 = rng.fillNormal(new Float32Array(B * D * N));
  for (const opts of [{}, { h0 }]) {
    const r = gradcheck('selectiveScan', (...a) => T.selectiveScan(a[0], a[1], a[2], a[3], a[4], a[5], B, L, opts), scanInputs(rng, B, L, D, N), { eps: 1e-2 });
    assert.ok(r.worstRatio <= 1);
  }
});

test('selectiveScan over two halves with the carried state equals one pass; the state is the last h', () => {
  const rng = new Rng(7);
  const [B, L, D, N] = [2, 6, 3, 2];
  const xs = scanInputs(rng, B, L, D, N);
  const full = T.noGrad(() => T.selectiveScan(xs[0], xs[1], xs[2], xs[3], xs[4], xs[5], B, L));
  const half = (x: Tensor, from: number, to: number) => T.reshape(T.slice(T.reshape(x, [B, L, x.shape[1]]), 1, from, to), [B * (to - from), x.shape[1]]);
  const state = new Float32Array(B * D * N);
  const parts: Float32Array[] = [];
  T.noGrad(() => {
    for (const [a, b] of [
      [0, 4],
      [4, 6],
    ]) {
      const next = new Float32Array(state.length);
      const y = T.selectiveScan(half(xs[0], a, b), half(xs[1], a, b), xs[2], half(xs[3], a, b), half(xs[4], a, b), xs[5], B, b - a, { h0: state.slice(), stateOut: next });
      state.set(next);
      parts.push(y.data);
    }
  });
  // reassemble [B, 4, D] and [B, 2, D] into [B, 6, D]
  const joined = new Float32Array(B * L * D);
  for (let b = 0; b < B; b++) {
    joined.set(parts[0].subarray(b * 4 * D, (b + 1) * 4 * D), b * L * D);
    joined.set(parts[1].subarray(b * 2 * D, (b + 1) * 2 * D), (b * L + 4) * D);
  }
  assertClose(joined, full.data, 1e-5, 1e-5, 'y');
  assert.ok(state.some((v) => v !== 0));
});

/** The conv written with one slice per tap: y = bias + sum_k w[:, k] * shift(x, K-1-k). */
function naiveConv(x: Tensor, w: Tensor, bias: Tensor, B: number, L: number): Tensor {
  const C = x.shape[1];
  const K = w.shape[2];
  const x3 = T.reshape(x, [B, L, C]);
  let y: Tensor = T.reshape(bias, [1, 1, C]);
  for (let k = 0; k < K; k++) {
    const shift = K - 1 - k;
    const wk = T.reshape(T.slice(T.reshape(w, [C, K]), 1, k, k + 1), [1, 1, C]);
    const shifted =
      shift === 0 ? x3 : shift >= L ? new Tensor(new Float32Array(B * L * C), [B, L, C]) : T.concat([new Tensor(new Float32Array(B * shift * C), [B, shift, C]), T.slice(x3, 1, 0, L - shift)], 1);
    y = T.add(y, T.mul(shifted, wk));
  }
  return T.reshape(y, [B * L, C]);
}

test('causalConv1d equals shifted taps (values, gradients), never reads the future, and continues from its state', () => {
  const rng = new Rng(9);
  const [B, L, C, K] = [2, 5, 3, 4];
  const xs = [randn(rng, [B * L, C]), randn(rng, [C, 1, K]), randn(rng, [C])];
  const fused = (...a: Tensor[]) => T.causalConv1d(a[0], a[1], a[2], B, L);
  const naive = (...a: Tensor[]) => naiveConv(a[0], a[1], a[2], B, L);
  assertClose(fused(...xs).data, naive(...xs).data, 1e-6, 1e-5, 'y');
  const wgt = rng.fillNormal(new Float32Array(B * L * C));
  const gf = grads(fused, xs, wgt);
  const gn = grads(naive, xs, wgt);
  ['x', 'weight', 'bias'].forEach((name, i) => assertClose(gf[i], gn[i], 1e-5, 1e-4, `grad ${name}`));
  assert.ok(gradcheck('causalConv1d', fused, xs).worstRatio <= 1);
  // causality: changing the last position changes only the last output
  const x2 = xs[0].data.slice();
  x2[(L - 1) * C] += 1;
  const y1 = fused(...xs).data;
  const y2 = T.causalConv1d(new Tensor(x2, xs[0].shape), xs[1], xs[2], B, L).data;
  for (let i = 0; i < (L - 1) * C; i++) assert.equal(y1[i], y2[i]);
  // token by token with the carried conv state equals the whole sequence
  let state: Float32Array = new Float32Array(B * (K - 1) * C);
  const step = new Float32Array(B * L * C);
  for (let t = 0; t < L; t++) {
    const xt = new Float32Array(B * C);
    for (let b = 0; b < B; b++) xt.set(xs[0].data.subarray((b * L + t) * C, (b * L + t + 1) * C), b * C);
    const xtT = new Tensor(xt, [B, C]);
    const yt = T.causalConv1d(xtT, xs[1], xs[2], B, 1, state).data;
    state = T.convState(xtT, K, B, 1, state);
    for (let b = 0; b < B; b++) step.set(yt.subarray(b * C, (b + 1) * C), (b * L + t) * C);
  }
  assertClose(step, y1, 1e-6, 1e-5, 'stepped conv');
});

test('the SSM ops reject malformed shapes with one line naming the input', () => {
  const rng = new Rng(1);
  const [u, dt, aLog, bm, cm, d] = scanInputs(rng, 1, 2, 3, 2);
  assert.throws(() => T.selectiveScan(u, dt, aLog, bm, cm, d, 1, 3), /selectiveScan: x must be \[batch \* seqLen = 3, channels\], got \[2, 3\]/);
  assert.throws(() => T.selectiveScan(u, dt, aLog, cm, T.reshape(cm, [1, 4]), d, 1, 2), /selectiveScan: C must be \[2, 2\], got \[1, 4\]/);
  assert.throws(() => T.selectiveScan(u, dt, aLog, bm, cm, d, 1, 2, { h0: new Float32Array(5) }), /h0 must hold batch \* D \* N = 6 values, got 5/);
  assert.throws(() => T.causalConv1d(u, randn(rng, [2, 1, 4]), null, 1, 2), /causalConv1d: weight must be \[3, 1, K\], got \[2, 1, 4\]/);
  assert.throws(() => T.causalConv1d(u, randn(rng, [3, 1, 4]), null, 1, 2, new Float32Array(2)), /prefix must hold batch \* \(K-1\) \* C = 9 values, got 2/);
});
