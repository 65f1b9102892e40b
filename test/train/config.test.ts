import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseRunConfig, parseRunConfigText, parseModelConfig, matchedDenseConfig, ConfigError } from '../../src/models/config.js';

test('defaults are a valid small MoE', () => {
  const c = parseRunConfig({});
  assert.equal(c.model.num_local_experts, 8);
  // the measured train default (TRAIN_DEFAULT_MODEL): one shared expert + top-1 with raw probabilities
  assert.equal(c.model.num_experts_per_tok, 1);
  assert.equal(c.model.n_shared_experts, 1);
  assert.equal(c.model.norm_topk_prob, false);
  assert.deepEqual(c.data.sources, ['shakespeare']);
  // a model section starts from the field defaults
  const m = parseRunConfig({ model: { hidden_size: 64 } }).model;
  assert.equal(m.num_experts_per_tok, 2);
  assert.equal(m.n_shared_experts, 0);
});

test('unknown and invalid fields are named', () => {
  assert.throws(
    () => parseRunConfig({ model: { num_local_expert: 4 } }),
    (e: Error) => e instanceof ConfigError && /model/.test(e.message) && /num_local_expert/.test(e.message),
  );
  assert.throws(() => parseRunConfig({ model: { hidden_size: -3 } }), /model\.hidden_size/);
  assert.throws(() => parseRunConfig({ training: { lr: 'fast' } }), /training\.lr/);
  assert.throws(() => parseRunConfig({ model: { num_local_experts: 2, num_experts_per_tok: 3 } }), /model\.num_experts_per_tok: cannot exceed/);
  assert.throws(() => parseRunConfig({ model: { hidden_size: 30, num_attention_heads: 4 } }), /num_attention_heads/);
  assert.throws(() => parseRunConfig({ data: { sources: ['a', 'b'], weights: [1] } }), /data\.weights/);
  assert.throws(() => parseRunConfigText('{"model": ', 'cfg.json'), /config cfg\.json is not valid JSON/);
});

test('matched dense baseline has the same active FFN width', () => {
  const m = parseModelConfig({ num_local_experts: 8, num_experts_per_tok: 2, moe_intermediate_size: 96, n_shared_experts: 1 });
  const d = matchedDenseConfig(m);
  assert.equal(d.num_local_experts, 0);
  assert.equal(d.intermediate_size, 3 * 96);
  const h = parseModelConfig({ num_local_experts: 2, num_experts_per_tok: 1, expert_sizes: [64, 128] });
  assert.equal(matchedDenseConfig(h).intermediate_size, 96);
});
