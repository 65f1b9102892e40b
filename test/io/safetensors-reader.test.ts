import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';
import { SafetensorsReader, readSafetensorsSync, serializeSafetensors, parseSafetensors, type TensorEntry } from '../../src/io/safetensors.js';
import { SafetensorsCheckpoint } from '../../src/io/safetensors-index.js';
import { dequantFp8Blocks, dequantMxfp4, entryToFloat32 } from '../../src/io/quant.js';
import { Rng } from '../../src/tensor/random.js';
import { f32ToBf16 } from '../../src/tensor/dtype.js';

function tmp(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'st-reader-'));
}

function image(header: unknown, data: number[] | Uint8Array = []): Uint8Array {
  const json = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

// eslint-disable-next-line no-control-regex -- control characters are what this matches
const oneLine = (e: unknown): boolean => e instanceof Error && !/[\u0000-\u001f\u007f-\u009f]/.test(e.message);

test('reader: header validated on open, tensors read at their offsets', () => {
  const dir = tmp();
  const f = path.join(dir, 'a.safetensors');
  const m = new Map<string, TensorEntry>([
    ['a', { dtype: 'float32', shape: [2, 3], data: Float32Array.from([1, 2, 3, 4, 5, 6]) }],
    ['b', { dtype: 'bfloat16', shape: [2], data: f32ToBf16([0.5, -2]) }],
  ]);
  fs.writeFileSync(f, serializeSafetensors(m, { format: 'pt' }));
  const r = new SafetensorsReader(f);
  assert.deepEqual(r.names().sort(), ['a', 'b']);
  assert.equal(r.metadata.format, 'pt');
  assert.deepEqual([...(r.read('a').data as Float32Array)], [1, 2, 3, 4, 5, 6]);
  assert.deepEqual([...entryToFloat32(r.read('b'), 'b')], [0.5, -2]);
  assert.throws(() => r.read('zz'), /no tensor "zz"/);
  r.close();
  // truncating the data is found on open (from the header alone), naming the file and offsets
  const whole = fs.readFileSync(f);
  fs.writeFileSync(f, whole.subarray(0, whole.length - 3));
  assert.throws(
    () => new SafetensorsReader(f),
    (e: Error) => e.message.includes(f) && /out of range: .*truncated file/.test(e.message) && oneLine(e),
  );
});

test('reader: duplicate names, control characters and non-regular files', () => {
  const eight = [0, 0, 0, 0, 0, 0, 0, 0];
  const dupText = '{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}';
  assert.throws(() => parseSafetensors(image(dupText, eight), 'd'), /tensor "w" appears twice/);
  // nested keys that repeat across entries are not duplicates
  const okText = '{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}';
  assert.equal(parseSafetensors(image(okText, eight)).tensors.size, 2);
  const evil = 'x\u001b[31m\nline2\u0085';
  assert.throws(
    () => parseSafetensors(image({ [evil]: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, eight), 'c'),
    (e: Error) => {
      assert.ok(oneLine(e), e.message);
      assert.match(e.message, /tensor "x\\u001b\[31m\\u000aline2\\u0085"/);
      return true;
    },
  );
  const dir = tmp();
  assert.throws(() => new SafetensorsReader(dir), /not a regular file/);
  const fifo = path.join(dir, 'fifo');
  try {
    execFileSync('mkfifo', [fifo]);
  } catch {
    return; // no mkfifo on this platform
  }
  assert.throws(() => new SafetensorsReader(fifo), /not a regular file/);
});

test('reader: bounded mutation fuzz never throws anything but a one-line named error', () => {
  const rng = new Rng(11);
  const m = new Map<string, TensorEntry>([
    ['w', { dtype: 'float32', shape: [3, 2], data: Float32Array.from([1, 2, 3, 4, 5, 6]) }],
    ['h', { dtype: 'float16', shape: [4], data: new Uint16Array(4) }],
    ['i', { dtype: 'int64', shape: [1], data: BigInt64Array.from([7n]) }],
  ]);
  const base = serializeSafetensors(m, { format: 'pt' });
  const dir = tmp();
  const f = path.join(dir, 'm.safetensors');
  let ok = 0;
  let bad = 0;
  for (let it = 0; it < 400; it++) {
    let b = Uint8Array.from(base);
    const kind = Math.floor(rng.next() * 4);
    if (kind === 0) for (let j = 0; j < 1 + Math.floor(rng.next() * 4); j++) b[Math.floor(rng.next() * b.length)] = Math.floor(rng.next() * 256);
    else if (kind === 1) b = b.subarray(0, Math.floor(rng.next() * b.length));
    else if (kind === 2) {
      const p = 8 + Math.floor(rng.next() * (b.length - 8));
      b[p] = '{}[],:"0123456789-e'.charCodeAt(Math.floor(rng.next() * 19));
    } else b[Math.floor(rng.next() * 8)] = Math.floor(rng.next() * 256);
    fs.writeFileSync(f, b);
    try {
      const r = readSafetensorsSync(f);
      assert.ok(r.tensors.size <= 3);
      ok++;
    } catch (e) {
      assert.ok(e instanceof Error, `iteration ${it}: threw a non-Error`);
      assert.ok(oneLine(e), `iteration ${it}: ${(e as Error).message}`);
      assert.ok((e as Error).message.startsWith(`safetensors ${f}: `), `iteration ${it}: ${(e as Error).message}`);
      bad++;
    }
  }
  assert.ok(bad > 100 && ok >= 0);
});

test('sharded checkpoint via model.safetensors.index.json', () => {
  const dir = tmp();
  const rng = new Rng(3);
  const names: string[] = [];
  const weightMap: Record<string, string> = {};
  const values = new Map<string, Float32Array>();
  for (let s = 0; s < 3; s++) {
    const m = new Map<string, TensorEntry>();
    for (let j = 0; j < 4; j++) {
      const n = `layers.${s}.w${j}`;
      const d = rng.fillNormal(new Float32Array(5 + j), 1);
      values.set(n, d);
      m.set(n, { dtype: 'float32', shape: [5 + j], data: d });
      names.push(n);
      weightMap[n] = `model-0000${s + 1}-of-00003.safetensors`;
    }
    fs.writeFileSync(path.join(dir, `model-0000${s + 1}-of-00003.safetensors`), serializeSafetensors(m, { format: 'pt' }));
  }
  const writeIndex = (wm: Record<string, string>): void => fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: 0 }, weight_map: wm }));
  writeIndex(weightMap);
  const ck = new SafetensorsCheckpoint(dir);
  assert.deepEqual(ck.names().sort(), names.slice().sort());
  for (const n of names) assert.deepEqual(ck.read(n).data, values.get(n));
  assert.throws(() => ck.read('nope'), /missing tensor "nope"/);
  ck.close();
  writeIndex({ ...weightMap, 'extra.w': 'model-00001-of-00003.safetensors' });
  assert.throws(() => new SafetensorsCheckpoint(dir), /weight_map lists tensor "extra.w" in model-00001-of-00003.safetensors, but no shard holds it/);
  writeIndex({ ...weightMap, x: '../evil.safetensors' });
  assert.throws(() => new SafetensorsCheckpoint(dir), /not a plain file name/);
  writeIndex({ ...weightMap, 'layers.0.w0': 'model-00002-of-00003.safetensors' });
  assert.throws(() => new SafetensorsCheckpoint(dir), /puts tensor "layers.0.w0" in model-00002-of-00003.safetensors, but it is in model-00001/);
  const sh = path.join(dir, 'model-00002-of-00003.safetensors');
  const whole = fs.readFileSync(sh);
  fs.writeFileSync(sh, whole.subarray(0, whole.length - 4));
  writeIndex(weightMap);
  assert.throws(
    () => new SafetensorsCheckpoint(dir),
    (e: Error) => e.message.includes('model-00002-of-00003.safetensors') && /file byte \d+/.test(e.message),
  );
  fs.rmSync(path.join(dir, 'model.safetensors.index.json'));
  assert.throws(() => new SafetensorsCheckpoint(dir), /no model.safetensors or model.safetensors.index.json/);
});

test('F8_E4M3 block scales and MXFP4 dequantise to the right values', () => {
  // 0x38 = 1.0, 0x40 = 2.0, 0xb8 = -1.0, 0x7e = 448 (max), 0x01 = 2^-9 (smallest subnormal)
  const bytes = Uint8Array.from([0x38, 0x40, 0xb8, 0x7e, 0x01, 0x38]);
  const w: TensorEntry = { dtype: 'uint8', code: 'F8_E4M3', shape: [3, 2], data: bytes };
  assert.deepEqual([...entryToFloat32(w, 'w')], [1, 2, -1, 448, 2 ** -9, 1]);
  // blocks of [2, 1]: rows 0-1 scaled by column's scale in block row 0, row 2 by block row 1
  const s: TensorEntry = { dtype: 'float32', shape: [2, 2], data: Float32Array.from([10, 100, 0.5, 4]) };
  assert.deepEqual([...dequantFp8Blocks(w, s, [2, 1], 'w')], [10, 200, -10, 44800, 2 ** -10, 4]);
  assert.throws(() => dequantFp8Blocks(w, { ...s, shape: [1, 2] }, [2, 1], 'w'), /w_scale_inv.*expected \[2, 2\]/);
  // one block of 2 bytes (4 values): nibbles low first; scale 128 -> x2
  const blocks: TensorEntry = { dtype: 'uint8', shape: [1, 1, 2], data: Uint8Array.from([0x21, 0xf7]) };
  const scales: TensorEntry = { dtype: 'uint8', shape: [1, 1], data: Uint8Array.from([128]) };
  const r = dequantMxfp4(blocks, scales, 'x');
  assert.deepEqual(r.shape, [1, 4]);
  assert.deepEqual([...r.data], [1, 2, 12, -12]);
});
