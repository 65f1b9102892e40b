/** ModuleFormer's mutual-information (balancing) and load-concentration losses (Shen et al. 2023). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Tensor, zeros } from '../../src/tensor/tensor.js';
import { Rng } from '../../src/tensor/random.js';
import { softmax } from '../../src/tensor/index.js';
import type { RouterOutput } from '../../src/moe/types.js';
import { lossRegistry } from '../../src/moe/losses/index.js';
import { gradcheck } from '../helpers/gradcheck.js';

function out(logits: Tensor): RouterOutput {
  const T = logits.shape[0];
  return { logits, probs: softmax(logits, -1), routing: { kind: 'sparse', tokenIdx: new Int32Array(T), expertIdx: new Int32Array(T), weights: zeros([T]) }, losses: {}, metrics: {} };
}
const H = (p: number[]) => -p.reduce((s, v) => s + (v > 0 ? v * Math.log(v) : 0), 0);
const info = (T: number, E: number) => ({ numExperts: E, tokens: T, topK: 1 });

test('moduleformer-mi = -H(mean p) + mean H(p) and load-concentration = H(mean p), by hand', () => {
  const logits = new Tensor(Float32Array.from([2, 0, -1, 0.5, 0.5, 0, -1, 1, 3]), [3, 3], true);
  const p = [0, 1, 2].map((t) => {
    const r = Array.from(logits.data.subarray(t * 3, t * 3 + 3)).map(Math.exp);
    const s = r.reduce((a, b) => a + b, 0);
    return r.map((v) => v / s);
  });
  const marginal = [0, 1, 2].map((e) => (p[0][e] + p[1][e] + p[2][e]) / 3);
  const cond = (H(p[0]) + H(p[1]) + H(p[2])) / 3;
  const mi = lossRegistry.get('moduleformer-mi')(out(logits), info(3, 3)).item();
  const lc = lossRegistry.get('load-concentration')(out(logits), info(3, 3)).item();
  assert.ok(Math.abs(mi - (-H(marginal) + cond)) < 1e-5, `mi ${mi}`);
  assert.ok(Math.abs(lc - H(marginal)) < 1e-5, `lc ${lc}`);
});

test('their extremes: MI loss is -log E for balanced one-hot routing and load concentration is 0 when every token picks one expert', () => {
  const E = 4;
  const oneHot = (rows: number[]) => new Tensor(Float32Array.from(rows.flatMap((e) => Array.from({ length: E }, (_, j) => (j === e ? 30 : -30)))), [rows.length, E]);
  const balanced = lossRegistry
    .get('moduleformer-mi')(out(oneHot([0, 1, 2, 3])), info(4, E))
    .item();
  assert.ok(Math.abs(balanced + Math.log(E)) < 1e-4, `balanced ${balanced}`);
  const collapsed = lossRegistry
    .get('moduleformer-mi')(out(oneHot([2, 2, 2, 2])), info(4, E))
    .item();
  assert.ok(Math.abs(collapsed) < 1e-4, `collapsed MI loss ${collapsed}`);
  assert.ok(
    Math.abs(
      lossRegistry
        .get('load-concentration')(out(oneHot([1, 1, 1, 1])), info(4, E))
        .item(),
    ) < 1e-4,
  );
  assert.ok(
    Math.abs(
      lossRegistry
        .get('load-concentration')(out(oneHot([0, 1, 2, 3])), info(4, E))
        .item() - Math.log(E),
    ) < 1e-4,
  );
});

test('both losses: gradients w.r.t. the router logits match finite differences; soft routing gives 0; bad shapes name the loss', () => {
  const logits = new Tensor(new Rng(3).fillNormal(new Float32Array(5 * 4)), [5, 4], true);
  for (const name of ['moduleformer-mi', 'load-concentration']) {
    gradcheck(name, (l) => lossRegistry.get(name)(out(l), info(5, 4)), [logits], { eps: 1e-3 });
    const soft = { ...out(logits), routing: { kind: 'soft' as const, slotsPerExpert: 1, dispatch: zeros([5, 4]), combine: zeros([5, 4]) } };
    assert.equal(lossRegistry.get(name)(soft, info(5, 4)).item(), 0);
    assert.throws(() => lossRegistry.get(name)(out(logits), info(5, 3)), new RegExp(`loss "${name}": router probs has shape \\[5, 4\\]`));
  }
});
