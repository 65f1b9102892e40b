import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { writeFileAtomic, writeFileAtomicSync, writeJsonAtomic, writeJsonAtomicSync, writeStreamAtomicSync } from '../../src/io/atomic.js';

test('atomic writes replace the file and leave no temp files', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'moe-atomic-'));
  try {
    const f = path.join(dir, 'a', 'b.txt');
    writeFileAtomicSync(f, 'one');
    assert.equal(fs.readFileSync(f, 'utf8'), 'one');
    await writeFileAtomic(f, new Uint8Array([0x74, 0x77, 0x6f]));
    assert.equal(fs.readFileSync(f, 'utf8'), 'two');
    const j = path.join(dir, 'r.json');
    writeJsonAtomicSync(j, { x: 1 });
    assert.deepEqual(JSON.parse(fs.readFileSync(j, 'utf8')), { x: 1 });
    await writeJsonAtomic(j, { y: [2] });
    assert.deepEqual(JSON.parse(fs.readFileSync(j, 'utf8')), { y: [2] });
    assert.deepEqual(fs.readdirSync(path.join(dir, 'a')), ['b.txt']);
    assert.deepEqual(fs.readdirSync(dir).sort(), ['a', 'r.json']);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a failed write leaves the old file and no temp file', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'moe-atomic-'));
  try {
    const target = path.join(dir, 'd');
    fs.mkdirSync(target); // renaming a file over a directory fails
    fs.writeFileSync(path.join(target, 'keep'), 'x');
    assert.throws(() => writeFileAtomicSync(target, 'data'), /writeFileAtomic .*d: /);
    await assert.rejects(writeFileAtomic(target, 'data'), /writeFileAtomic /);
    assert.deepEqual(fs.readdirSync(dir), ['d']);
    assert.throws(() => writeJsonAtomicSync(path.join(dir, 'u.json'), undefined), /not JSON-serialisable/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('streamed atomic writes: positioned chunks land in place; a throwing body keeps the old file, leaves no temp and rethrows its own error', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'moe-atomic-stream-'));
  try {
    const f = path.join(dir, 'x.bin');
    const n = writeStreamAtomicSync(f, (fd) => {
      fs.writeSync(fd, Buffer.from('world'), 0, 5, 6);
      fs.writeSync(fd, Buffer.from('hello '), 0, 6, 0);
      return 11;
    });
    assert.equal(n, 11);
    assert.equal(fs.readFileSync(f, 'utf8'), 'hello world');
    assert.throws(
      () =>
        writeStreamAtomicSync(f, (fd) => {
          fs.writeSync(fd, Buffer.from('partial'));
          throw new Error('tensor "w": 3 bytes produced, needs 4');
        }),
      /^Error: tensor "w": 3 bytes produced, needs 4$/,
    );
    assert.equal(fs.readFileSync(f, 'utf8'), 'hello world');
    assert.deepEqual(fs.readdirSync(dir), ['x.bin']);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
