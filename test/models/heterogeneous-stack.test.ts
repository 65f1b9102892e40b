/**
 * AutoMoE-style heterogeneous stacks: moe_layer_overrides gives each layer its own expert count,
 * top-k and widths; the layers are built with them, the memory estimate and active parameters
 * count them, finite-difference gradients reach every kind of layer, the dense baseline and the exporters refuse what they cannot express, and the model
 * trains from a config.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import '../../src/kernels/index.js';
import { parseModelConfig, parseRunConfig, matchedDenseConfig, layerConfig } from '../../src/models/config.js';
import { MoETransformerLM, lmLoss } from '../../src/models/transformer.js';
import { Rng } from '../../src/tensor/random.js';
import { gradcheck } from '../helpers/gradcheck.js';
import { FFNExperts, HeterogeneousExperts } from '../../src/moe/experts/index.js';
import { countParameters } from '../../src/models/memory.js';
import { archForModel } from '../../src/io/hf/archs.js';
import { pruneExperts } from '../../src/models/prune.js';
import { TrainSession } from '../../src/train/session.js';

const base = { hidden_size: 16, num_hidden_layers: 3, num_attention_heads: 2, num_local_experts: 4, num_experts_per_tok: 2, moe_intermediate_size: 16 };
const overrides = {
  '0': { num_local_experts: 0 },
  '1': { num_local_experts: 8, num_experts_per_tok: 1, moe_intermediate_size: 24 },
  '2': { num_local_experts: 3, expert_sizes: [8, 16, 32] },
};

test('moe_layer_overrides builds each layer with its own expert count, top-k and widths', () => {
  const c = parseModelConfig({ ...base, moe_layer_overrides: overrides });
  const m = new MoETransformerLM(c, 0);
  assert.ok(m.layers[0].mlp && !m.layers[0].block_sparse_moe, 'layer 0 dense');
  const l1 = m.layers[1].block_sparse_moe!;
  assert.equal(l1.numExperts, 8);
  assert.equal(l1.topK, 1);
  assert.ok(l1.experts instanceof FFNExperts && l1.experts.dFF === 24);
  const l2 = m.layers[2].block_sparse_moe!;
  assert.equal(l2.numExperts, 3);
  assert.equal(l2.topK, 2);
  assert.ok(l2.experts instanceof HeterogeneousExperts);
  assert.deepEqual(
    [0, 1, 2].map((e) => l2.flopsPerToken(e)),
    [3 * 16 * 8, 3 * 16 * 16, 3 * 16 * 32],
  );
  // the estimate counts what is built; active parameters use each layer's own k / E
  assert.equal(countParameters(c).params, m.numParameters());
  const expertParams = (i: number) =>
    m
      .namedParameters()
      .filter(([n]) => n.startsWith(`layers.${i}.block_sparse_moe.experts`))
      .reduce((a, [, p]) => a + p.size, 0);
  assert.equal(m.numParameters() - m.activeParameters(), Math.round(expertParams(1) * (7 / 8) + expertParams(2) * (1 / 3)));
  // a new expert count without widths drops the model-wide expert_sizes
  assert.equal(layerConfig(parseModelConfig({ ...base, expert_sizes: [8, 8, 16, 16], moe_layer_overrides: { '1': { num_local_experts: 2 } } }), 1).expert_sizes, undefined);
});

test('moe_layer_overrides errors name the field; the dense baseline and exporters refuse mixed stacks', () => {
  assert.throws(() => parseModelConfig({ ...base, moe_layer_overrides: { '3': { num_local_experts: 2 } } }), /moe_layer_overrides\.3: must be a layer index in \[0, 3\)/);
  assert.throws(
    () => parseModelConfig({ ...base, moe_layer_overrides: { '1': { num_local_experts: 2, num_experts_per_tok: 3 } } }),
    /moe_layer_overrides\.1\.num_experts_per_tok: cannot exceed the layer's num_local_experts \(2\)/,
  );
  assert.throws(() => parseModelConfig({ ...base, moe_layer_overrides: { '1': { expert_sizes: [8] } } }), /moe_layer_overrides\.1\.expert_sizes: needs one width per expert of the layer \(4\), got 1/);
  assert.throws(() => parseModelConfig({ ...base, moe_layer_overrides: { '1': { top_k: 1 } } }), /top_k/);
  const c = parseModelConfig({ ...base, moe_layer_overrides: overrides });
  assert.throws(() => matchedDenseConfig(c), /different active widths/);
  // equal active widths: one dense width matches (k 1 x 32 = k 2 x 16)
  const same = parseModelConfig({ ...base, intermediate_size: 32, moe_layer_overrides: { '1': { num_local_experts: 8, num_experts_per_tok: 1, moe_intermediate_size: 32 } } });
  assert.equal(matchedDenseConfig(same).intermediate_size, 32);
  assert.equal(matchedDenseConfig(same).num_local_experts, 0);
  assert.throws(() => archForModel(c), /moe_layer_overrides/);
  assert.throws(() => pruneExperts(new MoETransformerLM(c, 0), [[0], [0]]), /moe_layer_overrides/);
});

test('a heterogeneous stack trains from a config', () => {
  const TEXT = 'First Citizen:\nBefore we proceed any further, hear me speak.\n'.repeat(40);
  const s = new TrainSession(
    parseRunConfig({ model: { ...base, moe_layer_overrides: overrides }, training: { steps: 10, batch_size: 2, seq_len: 16, warmup_steps: 1, lr: 1e-2 }, data: { sources: ['shakespeare'] } }),
    [TEXT],
  );
  const first = s.trainStep().loss;
  let last = first;
  for (let i = 0; i < 9; i++) last = s.trainStep().loss;
  assert.ok(last < first, `loss ${first} -> ${last}`);
  assert.deepEqual(
    s.lastLoads.map((l) => [l.layer, l.tokensPerExpert.length]),
    [
      [1, 8],
      [2, 3],
    ],
  );
});

test('a heterogeneous stack: finite-difference gradients of the dense layer, both MoE layers (routers, experts of each width) and the embedding', () => {
  const cfg = parseModelConfig({
    ...base,
    hidden_size: 4,
    num_attention_heads: 1,
    vocab_size: 8,
    moe_intermediate_size: 4,
    intermediate_size: 4,
    moe_layer_overrides: { '0': { num_local_experts: 0 }, '1': { num_local_experts: 3, num_experts_per_tok: 1, moe_intermediate_size: 3 }, '2': { num_local_experts: 3, expert_sizes: [2, 3, 5] } },
  });
  const m = new MoETransformerLM(cfg, 4);
  m.train();
  const ids = Int32Array.of(1, 5, 2, 7, 3);
  const targets = Int32Array.of(5, 2, 7, 3, 0);
  const [l0, l1, l2] = m.layers;
  // a sharp router keeps the discrete top-k choices away from ties under the finite-difference steps
  for (const l of [l1, l2]) l.block_sparse_moe!.router.parameters()[0].data.forEach((_, i, a) => (a[i] *= 20));
  // unit-scale embeddings: at the init's 0.02 a finite-difference step of 2e-3 would be a 10% change of the input
  m.embed_tokens.weight.data.forEach((_, i, a) => (a[i] *= 50));
  const loss = () => lmLoss(m.forward(ids, 1, 5, { ctx: { training: true, step: 0, rng: new Rng(0) } }), targets).loss;
  const inputs = [
    l0.mlp!.down_proj.weight,
    l1.block_sparse_moe!.router.parameters()[0],
    ...l1.block_sparse_moe!.experts.parameters(),
    l2.block_sparse_moe!.router.parameters()[0],
    ...l2.block_sparse_moe!.experts.parameters(),
    m.embed_tokens.weight,
  ];
  const rep = gradcheck('heterogeneous stack', loss, inputs, { eps: 2e-3 });
  assert.ok(rep.checked > 100, `checked ${rep.checked} elements`);
});
