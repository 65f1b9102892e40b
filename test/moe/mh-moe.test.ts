/** MH-MoE (Wu et al. 2024, "Multi-Head Mixture-of-Experts"): sub-tokens routed separately, merged back. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import '../../src/kernels/index.js';
import { noGrad } from '../../src/tensor/tensor.js';
import { Rng } from '../../src/tensor/random.js';
import * as T from '../../src/tensor/index.js';
import { MoELayer, type MoELayerConfig } from '../../src/moe/layer.js';
import { parseRunConfig } from '../../src/models/config.js';
import { TrainSession } from '../../src/train/session.js';
import { gradcheck, randn, assertClose } from '../helpers/gradcheck.js';

const ctx = { training: false, step: 0, rng: new Rng(0) };
const cfg = (extra: Partial<MoELayerConfig> = {}): MoELayerConfig => ({ dModel: 8, numExperts: 4, topK: 2, experts: { type: 'swiglu', dFF: 6 }, router: { type: 'topk' }, subTokens: 2, ...extra });

test('MH-MoE: y = merge(concat over sub-tokens of MoE(sub-token)), each sub-token routed on its own', () => {
  const layer = new MoELayer(cfg(), new Rng(1));
  const x = randn(new Rng(2), [5, 8], false);
  noGrad(() => {
    const { y, aux } = layer.forward(x, ctx);
    assert.equal(aux.router.logits.shape[0], 10, 'the router sees 2 sub-tokens per token');
    assert.equal(aux.router.logits.shape[1], 4);
    // independent form: each sub-token row of the multi-head projection through a plain MoE layer sharing the router and experts
    const plain = new MoELayer({ ...cfg(), dModel: 4, subTokens: undefined }, new Rng(9));
    plain.router = layer.router;
    plain.experts = layer.experts;
    const sub = T.reshape(layer.multi_head!.forward(x), [10, 4]);
    const rows: number[] = [];
    for (let r = 0; r < 10; r++) rows.push(...plain.forward(T.slice(sub, 0, r, r + 1), ctx).y.data);
    const want = layer.merge!.forward(T.reshape(new T.Tensor(Float32Array.from(rows), [10, 4]), [5, 8])).data;
    assertClose(y.data, want, 1e-6, 1e-5, 'MH-MoE output');
  });
  assert.throws(() => new MoELayer(cfg({ subTokens: 3 }), new Rng(0)), /config\.subTokens must divide dModel \(8\)/);
});

test('MH-MoE: whole-layer gradients (input, projections, router, experts) match finite differences', () => {
  const layer = new MoELayer(cfg({ dModel: 4, experts: { type: 'swiglu', dFF: 3 } }), new Rng(3));
  const x = randn(new Rng(4), [3, 4]);
  gradcheck('mh-moe', (xi) => layer.forward(xi, ctx).y, [x, ...layer.parameters()], { eps: 1e-3 });
});

test('a model with moe_sub_tokens trains from a config', () => {
  const TEXT = 'First Citizen:\nBefore we proceed any further, hear me speak.\n'.repeat(40);
  const c = parseRunConfig({
    model: { hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, num_local_experts: 4, num_experts_per_tok: 2, moe_intermediate_size: 16, moe_sub_tokens: 4 },
    training: { steps: 10, batch_size: 2, seq_len: 16, warmup_steps: 1, lr: 1e-2 },
    data: { sources: ['shakespeare'] },
  });
  const s = new TrainSession(c, [TEXT]);
  assert.ok(s.model.namedParameters().some(([n]) => n.endsWith('block_sparse_moe.multi_head.weight')));
  const first = s.trainStep().loss;
  let last = first;
  for (let i = 0; i < 9; i++) last = s.trainStep().loss;
  assert.ok(last < first, `loss ${first} -> ${last}`);
});
