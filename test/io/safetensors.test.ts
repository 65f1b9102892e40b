import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseSafetensors, parseSafetensorsHeader, readSafetensors, readSafetensorsSync, serializeSafetensors, TensorEntry, writeSafetensors, writeSafetensorsSync } from '../../src/io/safetensors.js';
import { f32ToF16 } from '../../src/tensor/dtype.js';

/** A file image from a header (object or raw string) and data bytes. */
function image(header: unknown, data: number[] | Uint8Array = [], lenOverride?: number): Uint8Array {
  const json = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(lenOverride ?? json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

function allDtypes(): Map<string, TensorEntry> {
  const m = new Map<string, TensorEntry>();
  m.set('f64', { dtype: 'float64', shape: [3], data: Float64Array.from([1.5, -2, 1e300]) });
  m.set('f32', { dtype: 'float32', shape: [2, 3], data: Float32Array.from([1, 2, 3, -4, 5.5, -0]) });
  m.set('f16', { dtype: 'float16', shape: [2, 2], data: f32ToF16([1, -2, 65504, 2 ** -24]) });
  m.set('bf16', { dtype: 'bfloat16', shape: [3], data: Uint16Array.from([0x3f80, 0xc000, 0x7f80]) });
  m.set('i64', { dtype: 'int64', shape: [2], data: BigInt64Array.from([-(2n ** 62n), 7n]) });
  m.set('i32', { dtype: 'int32', shape: [1, 1, 3], data: Int32Array.from([-1, 0, 2147483647]) });
  m.set('i16', { dtype: 'int16', shape: [2], data: Int16Array.from([-32768, 5]) });
  m.set('i8', { dtype: 'int8', shape: [5], data: Int8Array.from([-128, -1, 0, 1, 127]) });
  m.set('u8', { dtype: 'uint8', shape: [3], data: Uint8Array.from([0, 128, 255]) });
  m.set('bool', { dtype: 'bool', shape: [3], data: Uint8Array.from([1, 0, 1]) });
  m.set('scalar', { dtype: 'float32', shape: [], data: Float32Array.from([42]) });
  m.set('empty', { dtype: 'float32', shape: [0, 4], data: new Float32Array(0) });
  return m;
}

test('round trip of every dtype with metadata', () => {
  const src = allDtypes();
  const bytes = serializeSafetensors(src, { format: 'pt', step: '12' });
  const back = parseSafetensors(bytes);
  assert.deepEqual(back.metadata, { format: 'pt', step: '12' });
  assert.equal(back.tensors.size, src.size);
  for (const [name, t] of src) {
    const b = back.tensors.get(name)!;
    assert.ok(b, name);
    assert.equal(b.dtype, t.dtype, name);
    assert.deepEqual(b.shape, t.shape, name);
    assert.equal(b.data.constructor, t.data.constructor, name);
    assert.deepEqual(Array.from(b.data as ArrayLike<unknown>), Array.from(t.data as ArrayLike<unknown>), name);
  }
});

test('writer is deterministic, 8-aligned and space padded', () => {
  const src = allDtypes();
  const a = serializeSafetensors(src, { b: '2', a: '1' });
  const reversed = new Map([...src.entries()].reverse());
  const b = serializeSafetensors(reversed, { a: '1', b: '2' });
  assert.deepEqual(a, b);
  const n = Number(new DataView(a.buffer).getBigUint64(0, true));
  assert.equal((8 + n) % 8, 0);
  const headerText = Buffer.from(a.subarray(8, 8 + n)).toString('utf8');
  assert.match(headerText, /^\{"__metadata__":\{"a":"1","b":"2"\}/);
  assert.match(headerText, /\} *$/);
  // every tensor starts aligned to its item size
  const { entries } = parseSafetensorsHeader(a);
  const sizes: Record<string, number> = { float64: 8, int64: 8, float32: 4, int32: 4, float16: 2, bfloat16: 2, int16: 2, int8: 1, uint8: 1, bool: 1 };
  for (const [name, e] of entries) assert.equal(e.begin % sizes[e.dtype], 0, name);
});

test('reads a hand-constructed file', () => {
  const data = new Uint8Array(new Float32Array([1, -2, 0.5]).buffer);
  const f16 = new Uint8Array([0x00, 0x3c, 0x00, 0xc0]); // 1.0, -2.0 little-endian
  const buf = image(
    {
      __metadata__: { note: 'hi' },
      w: { dtype: 'F32', shape: [3], data_offsets: [0, 12] },
      h: { dtype: 'F16', shape: [1, 2], data_offsets: [12, 16] },
    },
    [...data, ...f16],
  );
  const f = parseSafetensors(buf, 'hand.safetensors');
  assert.deepEqual(f.metadata, { note: 'hi' });
  assert.deepEqual([...f.tensors.keys()], ['w', 'h']);
  assert.deepEqual(Array.from(f.tensors.get('w')!.data as Float32Array), [1, -2, 0.5]);
  assert.deepEqual(Array.from(f.tensors.get('h')!.data as Uint16Array), [0x3c00, 0xc000]);
  // unaligned offsets are fine (data is copied)
  const odd = image({ b: { dtype: 'U8', shape: [1], data_offsets: [0, 1] }, w: { dtype: 'F32', shape: [1], data_offsets: [1, 5] } }, [7, 0, 0, 0x80, 0x3f]);
  const g = parseSafetensors(odd);
  assert.deepEqual(Array.from(g.tensors.get('w')!.data as Float32Array), [1]);
  // a Buffer input must not alias (Buffer.slice is a view)
  const asBuffer = Buffer.from(buf);
  const t = parseSafetensors(asBuffer).tensors.get('w')!.data as Float32Array;
  asBuffer.fill(0);
  assert.equal(t[0], 1);
});

test('each malformed case gives its specific error', () => {
  const ok = { w: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } };
  const eight = [0, 0, 0, 0, 0, 0, 0, 0];
  const cases: [string, Uint8Array, RegExp][] = [
    ['truncated', new Uint8Array(5), /x: truncated file: 5 bytes, need at least 8 .* at byte 0/],
    ['header past end', image(ok, eight, 5000), /header length 5000 at byte 0 runs past the end of the file/],
    ['huge header', image(ok, eight, 2 ** 40), /header length 1099511627776 at byte 0 exceeds/],
    ['bad json', image('{"w": {', []), /bad JSON in header \(bytes 8\.\.15\)/],
    ['not an object', image('{}', []).fill(0x5b, 8, 9), /header must start with '\{' at byte 8/],
    [
      'bad utf8',
      (() => {
        const b = image('{"\u00e9":1}');
        b[10] = 0xff;
        return b;
      })(),
      /not valid UTF-8/,
    ],
    ['unknown dtype', image({ w: { dtype: 'F8', shape: [2], data_offsets: [0, 2] } }, [0, 0]), /tensor "w": unknown dtype "F8" \(field dtype/],
    ['missing dtype', image({ w: { shape: [2], data_offsets: [0, 8] } }, eight), /tensor "w": field dtype missing/],
    ['unknown field', image({ w: { ...ok.w, extra: 1 } }, eight), /tensor "w": unknown field "extra"/],
    ['bad shape', image({ w: { dtype: 'F32', shape: [2, -1], data_offsets: [0, 8] } }, eight), /tensor "w": shape\[1\] must be a non-negative integer, got -1/],
    ['bad offsets', image({ w: { dtype: 'F32', shape: [2], data_offsets: [0] } }, eight), /tensor "w": field data_offsets must be \[begin, end\]/],
    ['reversed offsets', image({ w: { dtype: 'F32', shape: [0], data_offsets: [8, 0] } }, eight), /tensor "w": data_offsets \[8, 0\] end before begin/],
    ['out of range', image({ w: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, eight), /tensor "w": data_offsets \[0, 16\] out of range: byte buffer has 8 bytes/],
    ['size mismatch', image({ w: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, eight), /tensor "w": data_offsets \[0, 8\] span 8 bytes, but shape \[3\] of F32 needs 12/],
    [
      'overlap',
      image({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } }, eight),
      /tensor "b": data_offsets \[4, 8\] overlap tensor "a" \(which ends at offset 8\)/,
    ],
    ['gap', image({ a: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } }, eight), /tensor "a": data_offsets begin at 4 but the previous data ends at 0: 4 uncovered bytes/],
    ['trailing', image({ a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }, eight), /4 trailing bytes after the last tensor/],
    ['metadata type', image({ __metadata__: { step: 3 }, ...ok }, eight), /__metadata__\.step must be a string, got number/],
    ['metadata shape', image({ __metadata__: ['x'], ...ok }, eight), /field __metadata__ must be an object/],
  ];
  for (const [label, buf, re] of cases) {
    assert.throws(
      () => parseSafetensors(buf, 'x'),
      (e: Error) => {
        assert.match(e.message, re, label);
        assert.ok(!e.message.includes('\n'), `${label}: one-line error`);
        assert.ok(e.message.startsWith('safetensors x: '), label);
        return true;
      },
      label,
    );
  }
});

test('writer rejects bad input', () => {
  assert.throws(() => serializeSafetensors({ w: { dtype: 'float32', shape: [3], data: new Float32Array(2) } }), /tensor "w": data has 8 bytes, shape \[3\] of float32 needs 12/);
  assert.throws(() => serializeSafetensors({ w: { dtype: 'float16', shape: [2], data: new Float32Array(1) as never } }), /tensor "w": data is a Float32Array, expected Uint16Array/);
  assert.throws(() => serializeSafetensors({ __metadata__: { dtype: 'uint8', shape: [0], data: new Uint8Array(0) } }), /reserved/);
  // raw bytes are accepted for any dtype
  const raw = new Uint8Array(new Float32Array([3]).buffer);
  const back = parseSafetensors(serializeSafetensors({ w: { dtype: 'float32', shape: [1], data: raw } }));
  assert.deepEqual(Array.from(back.tensors.get('w')!.data as Float32Array), [3]);
  // tensor named __proto__ survives
  const p = parseSafetensors(serializeSafetensors(new Map<string, TensorEntry>([['__proto__', { dtype: 'uint8', shape: [1], data: Uint8Array.from([9]) }]])));
  assert.deepEqual(Array.from(p.tensors.get('__proto__')!.data as Uint8Array), [9]);
});

test('atomic write to disk and read back (sync and async)', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'moe-st-'));
  try {
    const file = path.join(dir, 'sub', 'model.safetensors');
    writeSafetensorsSync(file, allDtypes(), { a: 'b' });
    const f = readSafetensorsSync(file);
    assert.equal(f.tensors.size, allDtypes().size);
    assert.deepEqual(f.metadata, { a: 'b' });
    await writeSafetensors(file, { x: { dtype: 'int32', shape: [2], data: Int32Array.from([5, 6]) } });
    const g = await readSafetensors(file);
    assert.deepEqual([...g.tensors.keys()], ['x']);
    assert.deepEqual(fs.readdirSync(path.join(dir, 'sub')), ['model.safetensors']); // no temp files left
    assert.throws(() => readSafetensorsSync(path.join(dir, 'missing.safetensors')), /missing\.safetensors: cannot read file: ENOENT/);
    await assert.rejects(readSafetensors(path.join(dir, 'missing.safetensors')), /ENOENT/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
