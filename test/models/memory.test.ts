// Issue 8 case 6: sizes are checked against the memory they need before anything is allocated.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { checkMemory, checkRunMemory, estimateMemory, countParameters, MemoryLimitError } from '../../src/models/memory.js';
import { parseModelConfig } from '../../src/models/config.js';
import { MoETransformerLM } from '../../src/models/transformer.js';
import { train } from '../../src/train/trainer.js';
import { tinyConfig, tmpDir } from '../train/helpers.js';

const GB = 1e9;

test('the parameter count matches the model that gets built', () => {
  for (const over of [{}, { tie_word_embeddings: false }, { num_local_experts: 0 }, { n_shared_experts: 1, decoder_sparse_step: 2 }, { expert_sizes: [16, 32, 48, 64] }, { hidden_act: 'gelu' }]) {
    const cfg = tinyConfig({ model: over }).model;
    const model = new MoETransformerLM(cfg, 0);
    assert.equal(countParameters(cfg).params, model.numParameters(), JSON.stringify(over));
  }
});

test('huge hidden_size, batch_size, layer and expert counts fail naming the field, needed and available bytes', async () => {
  const cases: [Parameters<typeof tinyConfig>[0], RegExp][] = [
    [
      { model: { hidden_size: 65536, num_attention_heads: 2 } },
      /^model\.hidden_size = 65536: one tensor would need 4\.29e\+9 elements \(17179869184 bytes\), more than the 1073741824 elements \(4294967296 bytes\) a typed array can hold$/,
    ],
    [
      { model: { hidden_size: 16384, num_attention_heads: 2 } },
      /^model\.hidden_size = 16384: training would need about [\d.]+ [GT]B \(\d+ bytes; .* parameters\), but only 16\.0 GB \(16000000000 bytes\) of memory is available$/,
    ],
    [{ training: { batch_size: 1e9 } }, /^training\.batch_size = 1000000000: one tensor would need .* elements/],
    [{ training: { batch_size: 200000 } }, /^training\.batch_size = 200000: training would need about .* but only 16\.0 GB/],
    [{ model: { num_hidden_layers: 1_000_000 } }, /^model\.num_hidden_layers = 1000000: training would need/],
    [{ model: { num_local_experts: 1_000_000 } }, /^model\.num_local_experts = 1000000: /],
  ];
  for (const [over, re] of cases) {
    const cfg = tinyConfig(over);
    assert.throws(
      () => checkRunMemory(cfg, 16 * GB),
      (e: Error) => e instanceof MemoryLimitError && re.test(e.message),
      `${JSON.stringify(over)}`,
    );
  }
  // through train(): the same error, before the corpus is read or the run directory is written
  const dir = tmpDir('mem');
  await assert.rejects(
    train({ config: tinyConfig({ model: { hidden_size: 16384, num_attention_heads: 2, num_hidden_layers: 64 } }), outDir: dir }),
    /model\.(hidden_size|num_hidden_layers) = \d+: training would need .* bytes.* of memory is available/,
  );
  assert.deepEqual(fs.readdirSync(dir), [], 'nothing written');
  assert.throws(
    () => new MoETransformerLM(parseModelConfig({ hidden_size: 16384, num_attention_heads: 2, num_hidden_layers: 512 }), 0),
    /model\.(hidden_size|num_hidden_layers) = \d+: the model would need/,
  );
});

test('the default and test configs fit easily', () => {
  const est = checkRunMemory(tinyConfig());
  assert.ok(est.trainingBytes < 100e6);
  const d = estimateMemory(parseModelConfig({}), { batch_size: 16, seq_len: 128 });
  assert.ok(d.trainingBytes > 16 * d.parameters && d.trainingBytes < 2 * GB);
  checkMemory(parseModelConfig({}), { available: 4 * GB });
});
