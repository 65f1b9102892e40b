/**
 * Finite-difference gradient checker for the tensor layer.
 *
 * The loss is L = sum(out * W) with fixed random weights W, so every output element (and every
 * mix of them) influences the check; summing with all-ones weights would hide errors that cancel.
 * Numeric gradients use central differences on the float32 input data, with L accumulated in
 * float64 so the only float32 rounding is the op's own. An element passes when
 *   |analytic - numeric| <= atol + rtol * max(|analytic|, |numeric|).
 * Defaults (eps 1e-2, rtol 1e-2, atol 2e-3) leave room for float32 rounding in L (~1e-6 relative,
 * divided by 2 eps) and the O(eps^2) truncation error of central differences on smooth ops.
 * Ops with kinks (relu, abs, max) must be checked on inputs at least a few eps from the kink.
 */
import assert from 'node:assert/strict';
import { Tensor, noGrad } from '../../src/tensor/tensor.js';
import { Rng } from '../../src/tensor/random.js';

export interface GradcheckOptions {
  /** Central-difference step (default 1e-2). */
  eps?: number;
  /** Relative tolerance (default 1e-2). */
  rtol?: number;
  /** Absolute tolerance (default 2e-3). */
  atol?: number;
  /** Seed of the loss weights W (default 1234). */
  seed?: number;
}

export interface GradcheckReport {
  /** Largest |analytic - numeric| / (atol + rtol * max(|a|, |n|)) over all checked elements (<= 1 passes). */
  worstRatio: number;
  /** Number of input elements checked. */
  checked: number;
}

interface Worst {
  ratio: number;
  input: number;
  index: number;
  analytic: number;
  numeric: number;
}

/** Multi-index of flat offset `i` in a row-major `shape`. */
export function unravel(i: number, shape: readonly number[]): number[] {
  const idx = new Array<number>(shape.length).fill(0);
  for (let d = shape.length - 1; d >= 0; d--) {
    const s = shape[d];
    if (s > 0) {
      idx[d] = i % s;
      i = Math.floor(i / s);
    }
  }
  return idx;
}

function weightedLoss(out: Tensor, w: Float32Array): number {
  let s = 0;
  for (let i = 0; i < out.size; i++) s += out.data[i] * w[i];
  return s;
}

/**
 * Check the gradients of `fn` with respect to every input that has requiresGrad. `fn` must be a
 * pure function of the inputs' data (it is re-run many times under noGrad). Throws an
 * AssertionError naming the op, the input, and the worst element (flat and multi-index).
 */
export function gradcheck(name: string, fn: (...xs: Tensor[]) => Tensor, inputs: Tensor[], opts: GradcheckOptions = {}): GradcheckReport {
  const eps = opts.eps ?? 1e-2;
  const rtol = opts.rtol ?? 1e-2;
  const atol = opts.atol ?? 2e-3;
  const rng = new Rng(opts.seed ?? 1234);

  for (const x of inputs) x.grad = null;
  const out = fn(...inputs);
  const w = new Float32Array(out.size);
  for (let i = 0; i < w.length; i++) w[i] = rng.next() * 2 - 1;
  for (let i = 0; i < out.size; i++) {
    if (!Number.isFinite(out.data[i])) assert.fail(`gradcheck(${name}): output element ${i} is ${out.data[i]}`);
  }
  const anyGrad = inputs.some((x) => x.requiresGrad);
  if (anyGrad) {
    assert.ok(out.requiresGrad, `gradcheck(${name}): output does not require grad although an input does`);
    out.backward(w);
  }

  let worst: Worst = { ratio: -1, input: -1, index: -1, analytic: 0, numeric: 0 };
  let checked = 0;
  inputs.forEach((x, k) => {
    if (!x.requiresGrad) {
      assert.equal(x.grad, null, `gradcheck(${name}): input ${k} does not require grad but received one`);
      return;
    }
    const analytic = x.grad ?? new Float32Array(x.size);
    assert.equal(analytic.length, x.size, `gradcheck(${name}): gradient of input ${k} has ${analytic.length} elements, expected ${x.size}`);
    const d = x.data;
    for (let i = 0; i < d.length; i++) {
      const orig = d[i];
      d[i] = orig + eps;
      const hiEps = d[i] - orig; // the step actually taken after float32 rounding
      const lp = noGrad(() => weightedLoss(fn(...inputs), w));
      d[i] = orig - eps;
      const loEps = orig - d[i];
      const lm = noGrad(() => weightedLoss(fn(...inputs), w));
      d[i] = orig;
      const numeric = (lp - lm) / (hiEps + loEps);
      const a = analytic[i];
      const diff = Math.abs(a - numeric);
      const ratio = Number.isNaN(diff) ? Infinity : diff / (atol + rtol * Math.max(Math.abs(a), Math.abs(numeric)));
      if (ratio > worst.ratio) worst = { ratio, input: k, index: i, analytic: a, numeric };
      checked++;
    }
  });

  if (worst.ratio > 1) {
    const x = inputs[worst.input];
    assert.fail(
      `gradcheck(${name}): input ${worst.input} of shape [${x.shape.join(', ')}], worst element at flat index ${worst.index} ` +
        `[${unravel(worst.index, x.shape).join(', ')}]: analytic ${worst.analytic}, numeric ${worst.numeric} ` +
        `(|diff| ${Math.abs(worst.analytic - worst.numeric).toExponential(3)}, tolerance atol ${atol} + rtol ${rtol} * |value|)`,
    );
  }
  for (const x of inputs) x.grad = null;
  return { worstRatio: Math.max(worst.ratio, 0), checked };
}

/** A float32 tensor of N(0, std^2) (or U(lo, hi)) values from a seeded Rng. */
export function randn(rng: Rng, shape: readonly number[], requiresGrad = true, std = 1): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  return new Tensor(rng.fillNormal(new Float32Array(n), std), shape, requiresGrad);
}

export function randu(rng: Rng, shape: readonly number[], lo: number, hi: number, requiresGrad = true): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  return new Tensor(rng.fillUniform(new Float32Array(n), lo, hi), shape, requiresGrad);
}

/** Assert two arrays agree elementwise within atol + rtol * |expected|, naming the first bad index. */
export function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, atol = 1e-5, rtol = 1e-5, what = 'values'): void {
  assert.equal(actual.length, expected.length, `${what}: length ${actual.length} != ${expected.length}`);
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i];
    const e = expected[i];
    if (Number.isNaN(a) || Number.isNaN(e) || Math.abs(a - e) > atol + rtol * Math.abs(e)) {
      assert.fail(`${what}: element ${i}: got ${a}, expected ${e}`);
    }
  }
}
