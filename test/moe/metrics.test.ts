import { test } from 'node:test';
import assert from 'node:assert/strict';
import '../../src/kernels/index.js';
import { Tensor, zeros } from '../../src/tensor/tensor.js';
import type { RouterOutput } from '../../src/moe/types.js';
import { computeRoutingMetrics } from '../../src/moe/metrics.js';

const third = 1 / 3;
const probs = new Tensor(Float32Array.from([1, 0, 0, 0.5, 0.5, 0, third, third, third]), [3, 3]);

function sparseOut(): RouterOutput {
  return {
    logits: zeros([3, 3]),
    probs,
    routing: { kind: 'sparse', tokenIdx: Int32Array.from([0, 0, 1, 1, 2, 2]), expertIdx: Int32Array.from([0, 1, 0, 2, 0, 1]), weights: zeros([6]) },
    losses: {},
    metrics: { nullFraction: 0.25 },
  };
}

const close = (a: number, b: number, what: string) => assert.ok(Math.abs(a - b) < 1e-6, `${what}: got ${a}, expected ${b}`);

test('metrics of a tiny sparse routing with one capacity drop (hand-computed)', () => {
  const m = computeRoutingMetrics(sparseOut(), 3, 3, Uint8Array.from([1, 1, 1, 1, 0, 1]));
  assert.deepEqual(Array.from(m.tokensPerExpert), [2, 2, 1]);
  const mean = 5 / 3;
  const std = Math.sqrt(((2 - mean) ** 2 * 2 + (1 - mean) ** 2) / 3);
  close(m.loadCV, std / mean, 'loadCV');
  close(m.maxOverMean, 2 / mean, 'maxOverMean');
  close(m.droppedFraction, 1 / 6, 'droppedFraction');
  close(m.expertsPerToken, 5 / 3, 'expertsPerToken');
  close(m.routerEntropy, (Math.log(2) + Math.log(3)) / 3, 'routerEntropy');
  assert.deepEqual(m.extra, { nullFraction: 0.25 });
});

test('metrics without a kept mask count every assignment', () => {
  const m = computeRoutingMetrics(sparseOut(), 3, 3);
  assert.deepEqual(Array.from(m.tokensPerExpert), [3, 2, 1]);
  close(m.droppedFraction, 0, 'droppedFraction');
  close(m.expertsPerToken, 2, 'expertsPerToken');
  close(m.maxOverMean, 1.5, 'maxOverMean');
  close(m.loadCV, Math.sqrt(2 / 3) / 2, 'loadCV');
});

test('metrics of soft routing: probability load, E S / T expert evaluations per token, nothing dropped', () => {
  const out: RouterOutput = {
    logits: zeros([3, 3]),
    probs,
    routing: { kind: 'soft', slotsPerExpert: 1, dispatch: zeros([3, 3]), combine: probs },
    losses: {},
    metrics: {},
  };
  const m = computeRoutingMetrics(out, 3, 3);
  const col = [1 + 0.5 + third, 0.5 + third, third];
  m.tokensPerExpert.forEach((v, e) => close(v, col[e], `tokensPerExpert[${e}]`));
  // 3 experts x 1 slot for 3 tokens: one expert evaluation per token (each token feeds all 3 slots)
  assert.equal(m.expertsPerToken, 1);
  assert.equal(computeRoutingMetrics({ ...out, routing: { kind: 'soft', slotsPerExpert: 2, dispatch: zeros([3, 6]), combine: zeros([3, 6]) } }, 3, 3).expertsPerToken, 2);
  assert.equal(m.droppedFraction, 0);
  close(m.maxOverMean, col[0], 'maxOverMean');
});

test('metrics reject a kept mask or probs that do not match the routing', () => {
  assert.throws(() => computeRoutingMetrics(sparseOut(), 3, 3, new Uint8Array(5)), /kept has 5 entries, routing has 6 assignments/);
  assert.throws(() => computeRoutingMetrics(sparseOut(), 4, 3), /probs \[3, 3\] do not match tokens=3 x numExperts=4/);
});
