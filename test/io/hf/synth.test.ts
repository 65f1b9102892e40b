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

test('synth CLI: a bad --format, shape or dtype is a one-line error and writes nothing', async () => {
  const { spawnSync } = await import('node:child_process');
  const { fileURLToPath } = await import('node:url');
  const cli = path.join(path.dirname(fileURLToPath(import.meta.url)), '../../../src/cli/main.js');
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'synth-cli-'));
  try {
    const out = path.join(tmp, 'm');
    const cases: [string[], RegExp][] = [
      [['--shape', 'olmoe-1b-7b', '--format', 'onnx'], /--format must be gguf or safetensors, got "onnx"/],
      [['--shape', 'mixtral', '--format', 'safetensors'], /unknown shape "mixtral"/],
      [['--shape', 'olmoe-1b-7b', '--format', 'safetensors', '--dtype', 'int8'], /dtype must be bfloat16, float16 or float32, got "int8"/],
    ];
    for (const [args, re] of cases) {
      const r = spawnSync(process.execPath, [cli, 'synth', '--out', out, ...args], { encoding: 'utf8', timeout: 60_000 });
      assert.notEqual(r.status, 0);
      assert.match(r.stderr, re);
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
      assert.ok(!fs.existsSync(out));
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});
