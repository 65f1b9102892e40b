// The fused routing ops (src/tensor/ops/router_ops.ts) against the eager composition they replace (values, indices, every
// gradient), against finite differences, and wired into the default router and losses.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Tensor, add, sum, mul, tensor, softmaxTopKFused, softmaxStats, columnMeanDot, meanSquaredLogSumExp, mean, square, logSumExp, scale } from '../../src/index.js';
import { Rng } from '../../src/tensor/random.js';
import { gradcheck, assertClose } from '../helpers/gradcheck.js';
import { softmaxTopKReference } from '../../src/moe/routers/common.js';
import { MoELayer } from '../../src/moe/layer.js';
import { computeRoutingMetrics } from '../../src/moe/metrics.js';
import { switchLoss } from '../../src/moe/losses/switch.js';
import { zLoss } from '../../src/moe/losses/zloss.js';
import { TRAIN_DEFAULT_MODEL, RunConfigSchema } from '../../src/models/config.js';

/** Distinct logits per row (a shuffled ladder with gaps >> the finite-difference step) plus noise. */
function ladder(rng: Rng, T: number, E: number, gap = 0.4): Float32Array {
  const z = new Float32Array(T * E);
  for (let t = 0; t < T; t++) {
    const perm = Array.from({ length: E }, (_, i) => i);
    for (let i = E - 1; i > 0; i--) {
      const j = Math.floor(rng.next() * (i + 1));
      [perm[i], perm[j]] = [perm[j], perm[i]];
    }
    for (let e = 0; e < E; e++) z[t * E + e] = gap * perm[e] + 0.05 * (rng.next() - 0.5) - 1;
  }
  return z;
}

/** Every output of fused and eager, and the gradient through random projections of weights and probs. */
function compare(z: Float32Array, T: number, E: number, k: number, normalize: boolean, seed: number): void {
  const rng = new Rng(seed);
  const gw = rng.fillNormal(new Float32Array(T * k), 1);
  const gp = rng.fillNormal(new Float32Array(T * E), 1);
  const run = (fused: boolean) => {
    const x = new Tensor(z.slice(), [T, E], true);
    const r = fused ? softmaxTopKFused(x, k, normalize) : softmaxTopKReference(x, k, normalize);
    const probs = r.probs;
    const weights = fused ? (r as ReturnType<typeof softmaxTopKFused>).weights : (r as ReturnType<typeof softmaxTopKReference>).routing.weights;
    const indices = fused ? (r as ReturnType<typeof softmaxTopKFused>).indices : (r as ReturnType<typeof softmaxTopKReference>).indices;
    add(sum(mul(weights, new Tensor(gw, [T * k]))), sum(mul(probs, new Tensor(gp, [T, E])))).backward();
    return { probs: probs.data, weights: weights.data, indices, grad: x.grad! };
  };
  const f = run(true);
  const e = run(false);
  assert.deepEqual(Array.from(f.indices), Array.from(e.indices), 'indices');
  assertClose(f.probs, e.probs, 1e-7, 1e-6, 'probs');
  assertClose(f.weights, e.weights, 1e-7, 1e-6, 'weights');
  assertClose(f.grad, e.grad, 1e-6, 1e-5, 'logit gradient');
}

test('softmaxTopKFused equals softmax + top-k + gather (+ renormalise): values, indices and the logit gradient', () => {
  const rng = new Rng(7);
  for (const [T, E, k] of [
    [37, 8, 1],
    [29, 8, 2],
    [16, 6, 4],
    [5, 3, 3],
  ]) {
    const z = rng.fillNormal(new Float32Array(T * E), 2);
    for (const normalize of [false, true]) compare(z, T, E, k, normalize, T + k);
  }
});

test('softmaxTopKFused breaks ties like topkIndices (lower index) and matches it with repeated logits', () => {
  const T = 6;
  const E = 5;
  // rows with exact ties, all-equal rows and a -Infinity entry
  const z = Float32Array.from([0, 1, 1, 0, -1, 2, 2, 2, 2, 2, 0.5, 0.5, -0.3, 0.5, 0.5, -Infinity, 1, 1, 0, 0, 3, -2, 3, -2, 3, 0, 0, 0, 1, 1]);
  for (const k of [1, 2, 3]) for (const normalize of [false, true]) compare(z, T, E, k, normalize, 11 * k);
  const r = softmaxTopKFused(new Tensor(z.slice(), [T, E]), 2, false);
  assert.deepEqual(Array.from(r.indices.subarray(0, 2)), [1, 2]);
  assert.deepEqual(Array.from(r.indices.subarray(2, 4)), [0, 1]);
  assert.deepEqual(Array.from(r.counts), [3, 4, 3, 1, 1]);
  assert.deepEqual(Array.from(r.tokenIdx), [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]);
});

test('softmaxTopKFused gradients match finite differences (k = 1 and k = 2, raw and renormalised)', () => {
  const rng = new Rng(3);
  for (const k of [1, 2]) {
    for (const normalize of [false, true]) {
      const x = new Tensor(ladder(rng, 7, 6), [7, 6], true);
      gradcheck(`weights k=${k} normalize=${normalize}`, (t) => softmaxTopKFused(t, k, normalize).weights, [x]);
      gradcheck(`probs k=${k}`, (t) => softmaxTopKFused(t, k, normalize).probs, [x]);
    }
  }
});

test('columnMeanDot and meanSquaredLogSumExp equal the eager Switch and z-loss compositions, with gradients', () => {
  const rng = new Rng(5);
  const T = 23;
  const E = 8;
  const z = rng.fillNormal(new Float32Array(T * E), 1.5);
  const f = rng.fillUniform(new Float32Array(E), 0, 1);
  for (const viaRouter of [false, true]) {
    const run = (fused: boolean) => {
      const x = new Tensor(z.slice(), [T, E], true);
      // through the router op the z-loss reuses its recorded log-sum-exp; otherwise it computes its own
      const probs = viaRouter ? softmaxTopKFused(x, 2, true).probs : new Tensor(z.map(Math.tanh), [T, E], true);
      if (viaRouter) assert.ok(softmaxStats(x), 'stats recorded for the logits');
      const bal = fused ? columnMeanDot(probs, f, E) : scale(sum(mul(mean(probs, 0), new Tensor(f, [E]))), E);
      const zl = fused ? meanSquaredLogSumExp(x) : mean(square(logSumExp(x, -1)));
      add(scale(bal, 0.3), zl).backward();
      return { bal: bal.item(), zl: zl.item(), gx: x.grad!, gp: viaRouter ? null : probs.grad! };
    };
    const a = run(true);
    const b = run(false);
    assertClose([a.bal, a.zl], [b.bal, b.zl], 1e-6, 1e-5, 'loss values');
    assertClose(a.gx, b.gx, 1e-7, 1e-5, 'logit gradient');
    if (a.gp && b.gp) assertClose(a.gp, b.gp, 1e-8, 1e-5, 'probs gradient');
  }
  gradcheck('meanSquaredLogSumExp', meanSquaredLogSumExp, [new Tensor(z.slice(), [T, E], true)]);
  gradcheck('columnMeanDot', (t) => columnMeanDot(t, f, 3), [new Tensor(z.slice(), [T, E], true)]);
  assert.throws(() => columnMeanDot(tensor([1, 2, 3, 4], [2, 2]), new Float32Array(3)), /columnMeanDot: 3 column weights for x \[2, 2\]/);
  assert.throws(() => softmaxTopKFused(tensor([1, 2, 3, 4], [2, 2]), 3, false), /softmaxTopKFused: k=3 out of range \[0, 2\]/);
});

test('the train default router runs the fused op, and its losses and metrics equal the eager ones', () => {
  const m = RunConfigSchema.parse({}).model;
  assert.equal(m.num_experts_per_tok, TRAIN_DEFAULT_MODEL.num_experts_per_tok);
  const layer = new MoELayer(
    { dModel: 16, numExperts: 8, topK: 1, experts: { type: 'swiglu', dFF: 8 }, router: { type: m.router_type, normalize: m.norm_topk_prob }, losses: { switch: 0.01, zloss: 0.001 } },
    new Rng(2),
  );
  const T = 40;
  const x = new Tensor(new Rng(4).fillNormal(new Float32Array(T * 16), 1), [T, 16]);
  const out = layer.route(x, { training: true, step: 0, rng: new Rng(1) });
  // unplugging the fused op from the default router loses these stats
  const st = softmaxStats(out.probs);
  assert.ok(st && st.probs === out.probs && st.logits === out.logits, 'default topk router goes through softmaxTopKFused');
  const ref = softmaxTopKReference(out.logits, 1, m.norm_topk_prob);
  assert.deepEqual(Array.from(out.routing.kind === 'sparse' ? out.routing.expertIdx : []), Array.from(ref.indices));
  const info = { numExperts: 8, tokens: T, topK: 1 };
  const eager = { ...out, probs: ref.probs };
  assertClose([switchLoss(out, info).item()], [switchLoss(eager, info).item()], 1e-7, 1e-6, 'switch loss');
  assertClose([zLoss(out, info).item()], [mean(square(logSumExp(out.logits, -1))).item()], 1e-7, 1e-6, 'z-loss');
  const mf = computeRoutingMetrics(out, 8, T);
  const me = computeRoutingMetrics(eager, 8, T);
  assertClose([mf.routerEntropy], [me.routerEntropy], 1e-6, 1e-5, 'router entropy');
  assert.deepEqual(Array.from(mf.tokensPerExpert), Array.from(me.tokensPerExpert));
});
