// Issue 8 case 10 (file reads): FIFOs, devices, directories and oversized files give a clear error, never a hang.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { readRegularFileSync, readJsonFileSync, FileReadError } from '../../src/data/files.js';
import { readTextFile } from '../../src/data/corpus.js';
import { loadTokenizerFile } from '../../src/data/tokenizer/index.js';
import { loadCheckpoint } from '../../src/io/checkpoint.js';
import { tmpDir } from '../train/helpers.js';

const canFifo = process.platform !== 'win32';

test('regular files only, bounded in size, one-line errors naming the file', { skip: !canFifo }, () => {
  const dir = tmpDir('files');
  const fifo = path.join(dir, 'pipe');
  execFileSync('mkfifo', [fifo]);
  const big = path.join(dir, 'big.json');
  fs.writeFileSync(big, '{}' + ' '.repeat(2000));
  const ok = path.join(dir, 'ok.json');
  fs.writeFileSync(ok, '{"a": 1}');
  assert.deepEqual(readJsonFileSync(ok, { what: 'x', maxBytes: 100, object: true }), { a: 1 });
  const cases: [() => unknown, RegExp][] = [
    [() => readRegularFileSync(fifo, { what: 'config', maxBytes: 1e6 }), /^config .*pipe is a FIFO \(named pipe\), expected a regular file$/],
    [() => readRegularFileSync('/dev/zero', { what: 'config', maxBytes: 1e6 }), /^config \/dev\/zero is a character device, expected a regular file$/],
    [() => readRegularFileSync(dir, { what: 'config', maxBytes: 1e6 }), /is a directory/],
    [() => readRegularFileSync(big, { what: 'config', maxBytes: 1000 }), /big\.json is 2\.0 KiB, more than the limit of 1000 bytes/],
    [() => readRegularFileSync(path.join(dir, 'none'), { what: 'config', maxBytes: 1000 }), /^config not found: /],
    [() => readJsonFileSync(ok, { what: 'state', maxBytes: 1000, object: true }) && readJsonFileSync(path.join(dir, 'pipe'), { what: 'state', maxBytes: 1000 }), /FIFO/],
    [() => readTextFile(fifo), /^corpus file .*pipe is a FIFO/],
    [() => readTextFile('/dev/zero'), /^corpus file \/dev\/zero is a character device/],
    [() => loadTokenizerFile(fifo), /^tokenizer file .*pipe is a FIFO/],
    [() => loadTokenizerFile('/dev/zero'), /character device/],
  ];
  for (const [fn, re] of cases) assert.throws(fn, (e: Error) => e instanceof FileReadError && re.test(e.message), re.source);
  // a checkpoint whose files are pipes or devices
  const ck = path.join(dir, 'ck');
  fs.mkdirSync(ck);
  execFileSync('mkfifo', [path.join(ck, 'state.json')]);
  assert.throws(() => loadCheckpoint(ck), /checkpoint state .*state\.json is a FIFO/);
  const run = path.join(dir, 'run');
  fs.mkdirSync(run);
  fs.symlinkSync('/dev/zero', path.join(run, 'latest.json'));
  assert.throws(() => loadCheckpoint(run), /latest\.json is a character device/);
});
