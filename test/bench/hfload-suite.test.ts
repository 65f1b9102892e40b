import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { benchConfig, mixtralTensors, writeCheckpoint } from '../../bench/suites/hfload.js';
import { fromPretrained } from '../../src/io/hf/pretrained.js';
import { tmpDir } from '../train/helpers.js';

test('hfload: the full case is past 2 GB; the streamed checkpoint loads with fromPretrained, F32 and BF16 agreeing', () => {
  const full = benchConfig(false);
  const params = mixtralTensors(full).reduce((s, [, shape]) => s + shape.reduce((a, b) => a * b, 1), 0);
  assert.ok(params * 4 >= 2e9, `F32 case is ${params * 4} bytes`);
  const c = { ...benchConfig(true), vocab_size: 64, hidden_size: 32, intermediate_size: 16 };
  const d32 = path.join(tmpDir('hfload'), 'f32');
  const d16 = path.join(tmpDir('hfload'), 'bf16');
  const size = writeCheckpoint(d32, c, 'F32', 7);
  writeCheckpoint(d16, c, 'BF16', 7);
  assert.equal(fs.statSync(path.join(d32, 'model.safetensors')).size, size);
  const a = fromPretrained(d32).model;
  const b = fromPretrained(d16).model;
  const pa = new Map(a.namedParameters());
  for (const [n, p] of b.namedParameters()) {
    const q = pa.get(n)!.data;
    // BF16 here is the F32 value with its low 16 bits cut
    for (let i = 0; i < p.size; i++) assert.ok(Math.abs(p.data[i] - q[i]) <= Math.abs(q[i]) / 128 + 1e-12, `${n}[${i}]`);
  }
  assert.ok(pa.get('norm.weight')!.data.every((x) => x === 1));
  const w = pa.get('layers.0.block_sparse_moe.experts.w1')!.data;
  assert.ok(w.some((x) => x !== 0) && w.every((x) => Math.abs(x) <= 0.02));
});
