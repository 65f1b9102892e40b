/**
 * Checkpoints without a file system: the single-file checkpoint (state in the safetensors
 * metadata) round-trips through bytes and through the CLI loader, a CLI directory's two files
 * load from bytes, and wrong inputs fail with one-line messages naming the source.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { checkpointFromBytes, checkpointToBytes, loadCheckpointFrom, STATE_METADATA_KEY } from '../../src/io/checkpoint-bytes.js';
import { loadCheckpoint, saveCheckpoint } from '../../src/io/checkpoint.js';
import { parseSafetensors, serializeSafetensors } from '../../src/io/safetensors.js';
import { parseRunConfig } from '../../src/models/config.js';
import { TrainSession } from '../../src/train/session.js';
import { generate, inferenceModelFromCheckpoint, loadModelForInference } from '../../src/infer/generate.js';

const TEXT = 'First Citizen:\nBefore we proceed any further, hear me speak.\n'.repeat(40);

function session(): TrainSession {
  const cfg = parseRunConfig({
    model: { hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, num_local_experts: 4, num_experts_per_tok: 2, moe_intermediate_size: 16 },
    training: { steps: 3, batch_size: 2, seq_len: 16, warmup_steps: 1 },
    data: { sources: ['shakespeare'] },
  });
  const s = new TrainSession(cfg, [TEXT]);
  for (let i = 0; i < 3; i++) s.trainStep();
  return s;
}

const greedy = (m: ReturnType<typeof inferenceModelFromCheckpoint>): string => generate(m.model, m.tokenizer, 'First', { maxNewTokens: 12, temperature: 0 }).text;

test('a single-file checkpoint round-trips through bytes, a file and the CLI loader, with the same weights and greedy text', () => {
  const s = session();
  const bytes = s.checkpointBytes();
  const meta = parseSafetensors(bytes).metadata;
  assert.equal(JSON.parse(meta[STATE_METADATA_KEY]).step, 3);
  const ck = checkpointFromBytes(bytes, undefined, 'tab.safetensors');
  assert.equal(ck.state.step, 3);
  assert.deepEqual(ck.state.config, s.config);
  for (const [name, t] of s.model.stateDict()) assert.deepEqual(ck.model.get(name)!.data, t.data, name);
  const want = greedy({ model: s.model, tokenizer: s.tokenizer, config: s.config, step: 3 });
  assert.equal(greedy(inferenceModelFromCheckpoint(ck, 'tab.safetensors')), want);

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'moe-ckbytes-'));
  try {
    const file = path.join(dir, 'tab.safetensors');
    fs.writeFileSync(file, bytes);
    const m = loadModelForInference(file);
    assert.equal(m.step, 3);
    assert.equal(m.dir, file);
    assert.equal(greedy(m), want);
    assert.throws(() => loadCheckpoint(file, true), /tab\.safetensors: a single-file checkpoint has no optimizer state/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a CLI checkpoint directory loads from the bytes of its model.safetensors and state.json', async () => {
  const s = session();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'moe-ckbytes-'));
  try {
    const ckDir = saveCheckpoint(dir, { state: s.state(), model: s.model.stateDict(), optimizer: s.optimizer.getState() });
    const model = fs.readFileSync(path.join(ckDir, 'model.safetensors'));
    const state = fs.readFileSync(path.join(ckDir, 'state.json'));
    const ck = await loadCheckpointFrom(new Blob([model]), new Blob([state]));
    const disk = loadCheckpoint(dir, false);
    assert.equal(ck.state.step, disk.state.step);
    for (const [name, t] of disk.model) assert.deepEqual(ck.model.get(name)!.data, t.data, name);
    // ArrayBuffer and typed-array sources too
    const ck2 = await loadCheckpointFrom(model.buffer.slice(model.byteOffset, model.byteOffset + model.byteLength), new Uint8Array(state));
    assert.equal(ck2.model.size, disk.model.size);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('inputs that are not checkpoints fail with one-line errors naming the source', () => {
  const s = session();
  const bytes = s.checkpointBytes();
  assert.throws(() => checkpointFromBytes(new TextEncoder().encode('{"a": 1}'), undefined, 'state.json'), /^Error: state\.json: this is a JSON file, not a checkpoint/);
  assert.throws(() => checkpointFromBytes(new Uint8Array([1, 2, 3]), undefined, 'x.bin'), /x\.bin: truncated file: 3 bytes/);
  const plain = serializeSafetensors(new Map([['w', { dtype: 'float32', shape: [1], data: new Float32Array(1) }]]));
  assert.throws(() => checkpointFromBytes(plain, undefined, 'plain.safetensors'), /plain\.safetensors: a safetensors file without moe-ts trainer state/);
  assert.throws(() => checkpointFromBytes(bytes, '{"format": "other"}', 'ck'), /ck state\.json: field format is "other", expected "moe-ts-checkpoint"/);
  assert.throws(() => checkpointFromBytes(bytes, 'not json', 'ck'), /ck state\.json: cannot read checkpoint state/);
  // a state that does not match the tensors: the model refuses to load them
  const other = JSON.parse(JSON.stringify(s.state()));
  other.config.model.hidden_size = 32;
  const ck = checkpointFromBytes(bytes, JSON.stringify(other), 'mismatch');
  assert.throws(() => inferenceModelFromCheckpoint(ck, 'mismatch'), /mismatch\/model\.safetensors does not match its config/);
});

test('checkpointToBytes writes F32 tensors with the format metadata', () => {
  const s = session();
  const f = parseSafetensors(checkpointToBytes(s.state(), s.model.stateDict()));
  assert.equal(f.metadata.format, 'pt');
  assert.equal(f.metadata.producer, 'moe-ts');
  for (const t of f.tensors.values()) assert.equal(t.dtype, 'float32');
  assert.equal(f.tensors.size, s.model.stateDict().size);
});
