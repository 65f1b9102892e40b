/** Mixture of Nested Experts (Jain et al. 2024): nested expert widths sharing one FFN, and expert preferred routing under a budget. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import '../../src/kernels/index.js';
import { noGrad } from '../../src/tensor/tensor.js';
import { Rng } from '../../src/tensor/random.js';
import * as T from '../../src/tensor/index.js';
import { expertRegistry, NestedExperts, nestedWidths } from '../../src/moe/experts/index.js';
import { routerRegistry } from '../../src/moe/routers/index.js';
import { nestedCapacities } from '../../src/moe/routers/nested-budget.js';
import { MoELayer } from '../../src/moe/layer.js';
import { parseRunConfig } from '../../src/models/config.js';
import { TrainSession } from '../../src/train/session.js';
import { randn, assertClose } from '../helpers/gradcheck.js';

test('nested widths halve down from dFF; expert e is the full FFN restricted to its first w_e hidden units', () => {
  assert.deepEqual(nestedWidths(4, 64), [8, 16, 32, 64]);
  const bank = expertRegistry.get('nested')({ numExperts: 3, dModel: 6, dFF: 8 }, new Rng(1)) as NestedExperts;
  assert.deepEqual(bank.widths, [2, 4, 8]);
  assert.equal(
    bank.parameters().reduce((s, p) => s + p.size, 0),
    3 * 6 * 8,
    'one FFN of parameters for all experts',
  );
  const x = randn(new Rng(2), [3, 6], false);
  noGrad(() => {
    const small = bank.forwardGrouped(x, Int32Array.from([3, 0, 0])).data;
    // zero the full expert's hidden units >= 2: it must then equal expert 0
    for (let j = 2; j < 8; j++) for (let i = 0; i < 6; i++) bank.w2.data[j * 6 + i] = 0;
    assertClose(bank.forwardGrouped(x, Int32Array.from([0, 0, 3])).data, small, 1e-6, 1e-5, 'expert 0 vs truncated full expert');
  });
  assert.equal(bank.flopsPerToken(2), 4 * bank.flopsPerToken(0));
});

test("a token routed to a small expert sends gradient only into that expert's hidden units", () => {
  const bank = expertRegistry.get('nested')({ numExperts: 2, dModel: 4, dFF: 6, widths: [2, 6] }, new Rng(3)) as NestedExperts;
  const x = randn(new Rng(4), [2, 4]);
  T.sum(bank.forwardGrouped(x, Int32Array.from([2, 0]))).backward();
  const g = bank.w1.grad!;
  for (let i = 0; i < 4; i++)
    for (let j = 0; j < 6; j++) {
      if (j < 2) assert.notEqual(g[i * 6 + j], 0, `w1[${i}, ${j}] used`);
      else assert.equal(g[i * 6 + j], 0, `w1[${i}, ${j}] beyond width 2`);
    }
  assert.throws(() => expertRegistry.get('nested')({ numExperts: 2, dModel: 4, dFF: 6, widths: [4, 2] }, new Rng(0)), /experts "nested": widths must be non-decreasing and end at dFF \(6\)/);
});

test('expert preferred routing: fixed shares per batch, the largest expert takes its most preferred tokens first, one expert per token', () => {
  assert.deepEqual(Array.from(nestedCapacities([1, 1, 2], 10)), [2, 2, 6]);
  assert.deepEqual(Array.from(nestedCapacities([0, 1], 5)), [0, 5]);
  const router = routerRegistry.get('nested-budget')({ type: 'nested-budget', dModel: 8, numExperts: 3, topK: 1, capacities: [0.5, 0.25, 0.25] }, new Rng(5));
  const x = randn(new Rng(6), [12, 8], false);
  const out = noGrad(() => router.route(x, { training: false, step: 0, rng: new Rng(0) }));
  if (out.routing.kind !== 'sparse') throw new Error('sparse routing expected');
  const { tokenIdx, expertIdx } = out.routing;
  assert.deepEqual(
    [...tokenIdx].sort((a, b) => a - b),
    [...Array(12).keys()],
    'every token exactly once',
  );
  const count = [0, 0, 0];
  for (const e of expertIdx) count[e]++;
  assert.deepEqual(count, [6, 3, 3]);
  // the largest expert's tokens are its top-3 by probability over all tokens
  const p = out.probs.data;
  const byPref = [...Array(12).keys()].sort((s, t) => p[t * 3 + 2] - p[s * 3 + 2]).slice(0, 3);
  const largest = [...tokenIdx].filter((_, a) => expertIdx[a] === 2);
  assert.deepEqual(largest.sort(), byPref.sort());
  assert.throws(
    () => routerRegistry.get('nested-budget')({ type: 'nested-budget', dModel: 8, numExperts: 3, topK: 1, capacities: [1, 1] }, new Rng(0)),
    /capacities must have one share per expert \(3\)/,
  );
});

test('the compute of a nested MoE layer is fixed by the budget, whatever the input', () => {
  const layer = new MoELayer({ dModel: 8, numExperts: 3, topK: 1, experts: { type: 'nested', dFF: 16 }, router: { type: 'nested-budget', capacities: [2, 1, 1] } }, new Rng(7));
  const flops = (seed: number) => {
    const { aux } = noGrad(() => layer.forward(randn(new Rng(seed), [16, 8], false), { training: false, step: 0, rng: new Rng(0) }));
    return [...aux.metrics.tokensPerExpert].reduce((s, n, e) => s + n * layer.flopsPerToken(e), 0);
  };
  const want = 8 * 3 * 8 * 4 + 4 * 3 * 8 * 8 + 4 * 3 * 8 * 16; // 8 tokens at width 4, 4 at 8, 4 at 16
  for (const seed of [8, 9, 10]) assert.equal(flops(seed), want);
});

test('a MoNE model (nested experts, nested-budget router) trains from a config', () => {
  const TEXT = 'First Citizen:\nBefore we proceed any further, hear me speak.\n'.repeat(40);
  const cfg = parseRunConfig({
    model: {
      hidden_size: 16,
      num_hidden_layers: 1,
      num_attention_heads: 2,
      num_local_experts: 3,
      num_experts_per_tok: 1,
      moe_intermediate_size: 32,
      expert_type: 'nested',
      router_type: 'nested-budget',
      router_options: { capacities: [0.5, 0.25, 0.25] },
    },
    training: { steps: 10, batch_size: 2, seq_len: 16, warmup_steps: 1, lr: 1e-2 },
    data: { sources: ['shakespeare'] },
  });
  const s = new TrainSession(cfg, [TEXT]);
  const first = s.trainStep().loss;
  let last = first;
  for (let i = 0; i < 9; i++) last = s.trainStep().loss;
  assert.ok(last < first, `loss ${first} -> ${last}`);
});
