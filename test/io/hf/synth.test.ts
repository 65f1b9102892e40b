import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { writeSynthSafetensors } from '../../../src/io/hf/synth.js';
import { writeSynthGGUF } from '../../../src/io/gguf/synth.js';
import { fromPretrainedWithTokenizer } from '../../../src/io/hf/pretrained.js';
import { fromGGUF } from '../../../src/io/gguf/index.js';

const tiny = { hidden_size: 64, num_attention_heads: 4, num_local_experts: 4, num_experts_per_tok: 2, moe_intermediate_size: 32 };

test('synth safetensors: a sharded HF directory the importer loads, experts equal to the GGUF synth of the same seed', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'synth-st-'));
  try {
    const dir = path.join(tmp, 'hf');
    const r = writeSynthSafetensors('olmoe-1b-7b', dir, { layers: 2, dtype: 'float32', seed: 3, override: tiny, maxShardBytes: 60000 });
    assert.ok(r.files.includes('model.safetensors.index.json') && r.files.some((f) => /^model-00001-of-/.test(f)));
    const hf = fromPretrainedWithTokenizer(dir);
    assert.equal(hf.modelType, 'olmoe');
    assert.equal(hf.config.moe_intermediate_size, 32);
    writeSynthGGUF('olmoe-1b-7b', path.join(tmp, 'm.gguf'), { layers: 2, seed: 3, override: tiny });
    const g = new Map(fromGGUF(path.join(tmp, 'm.gguf')).model.namedParameters());
    let n = 0;
    for (const [name, p] of hf.model.namedParameters()) {
      if (!name.includes('.experts.')) continue;
      assert.deepEqual(p.data, g.get(name)!.data, name);
      n++;
    }
    assert.equal(n, 6);
    // another seed gives other experts
    const other = path.join(tmp, 'hf2');
    writeSynthSafetensors('olmoe-1b-7b', other, { layers: 2, dtype: 'bfloat16', seed: 4, override: tiny });
    const w = new Map(fromPretrainedWithTokenizer(other).model.namedParameters()).get('layers.0.block_sparse_moe.experts.w1')!.data;
    assert.notDeepEqual(w, g.get('layers.0.block_sparse_moe.experts.w1')!.data);
    assert.throws(() => writeSynthSafetensors('olmoe-1b-7b', dir, { override: tiny }), /already holds a model/);
    assert.throws(() => writeSynthSafetensors('nope', path.join(tmp, 'x')), /unknown shape "nope"/);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});
