import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  embeddedCorpusPath,
  findSharedTextDir,
  firstInvalidUtf8,
  loadCorpus,
  loadDomain,
  packageRoot,
  readTextFile,
  resolveDomainFiles,
} from '../../src/data/corpus.js';

function tmpdir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'moe-corpus-'));
}

test('embedded default resolves from the compiled file and loads', () => {
  const root = packageRoot();
  assert.equal(JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')).name, 'moe-ts');
  assert.equal(embeddedCorpusPath(), path.join(root, 'data', 'shakespeare.txt'));
  const text = loadDomain('shakespeare');
  assert.equal(text.length, 1115394);
  assert.ok(text.startsWith('First Citizen:'));
  assert.equal(loadCorpus('shakespeare'), text);
  assert.equal(loadCorpus(embeddedCorpusPath()), text);
});

test('readTextFile errors name the path', () => {
  const dir = tmpdir();
  try {
    const missing = path.join(dir, 'missing.txt');
    assert.throws(() => readTextFile(missing), new RegExp(`corpus file not found: ${missing.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`));
    assert.throws(() => readTextFile(dir), /is a directory/);
    const empty = path.join(dir, 'empty.txt');
    fs.writeFileSync(empty, '');
    assert.throws(() => readTextFile(empty), /empty\.txt is empty/);
    const bad = path.join(dir, 'bad.txt');
    fs.writeFileSync(bad, Buffer.from([0x68, 0x69, 0x20, 0xc3, 0x28]));
    assert.throws(() => readTextFile(bad), /bad\.txt is not valid UTF-8 \(bad byte 0xc3 at offset 3\)/);
    const bom = path.join(dir, 'bom.txt');
    fs.writeFileSync(bom, Buffer.from([0xef, 0xbb, 0xbf, 0x61]));
    assert.equal(readTextFile(bom), 'a');
    assert.throws(() => loadCorpus('nonsense'), /unknown corpus "nonsense"/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('UTF-8 validator', () => {
  const ok = Buffer.from('aé日🙂', 'utf8');
  assert.equal(firstInvalidUtf8(ok), -1);
  assert.equal(firstInvalidUtf8(new Uint8Array([0x61, 0xc0, 0x80])), 1); // overlong
  assert.equal(firstInvalidUtf8(new Uint8Array([0xe0, 0x80, 0x80])), 0); // overlong
  assert.equal(firstInvalidUtf8(new Uint8Array([0xed, 0xa0, 0x80])), 0); // surrogate
  assert.equal(firstInvalidUtf8(new Uint8Array([0xf4, 0x90, 0x80, 0x80])), 0); // > U+10FFFF
  assert.equal(firstInvalidUtf8(new Uint8Array([0x61, 0x62, 0xf0, 0x9f, 0x99])), 2); // truncated
  assert.equal(firstInvalidUtf8(new Uint8Array([0x80])), 0); // stray continuation
  assert.equal(firstInvalidUtf8(new Uint8Array([0xe6, 0x97, 0x41])), 0);
});

test('named domains from a data directory (option and MOE_DATA_DIR)', () => {
  const dir = tmpdir();
  const saved = process.env.MOE_DATA_DIR;
  try {
    fs.writeFileSync(path.join(dir, 'linux-train.txt'), 'int main() {\n');
    fs.writeFileSync(path.join(dir, 'linux-valid.txt'), '  return 0;\n}\n');
    assert.equal(loadDomain('linux', { dataDir: dir }), 'int main() {\n  return 0;\n}\n');
    assert.throws(() => loadDomain('wikitext', { dataDir: dir }), /corpus domain "wikitext": file not found: .*wikitext2-test\.txt/);
    process.env.MOE_DATA_DIR = dir;
    assert.equal(findSharedTextDir(), dir);
    assert.deepEqual(resolveDomainFiles('linux'), [path.join(dir, 'linux-train.txt'), path.join(dir, 'linux-valid.txt')]);
    process.env.MOE_DATA_DIR = path.join(dir, 'nope');
    assert.throws(() => findSharedTextDir(), /data directory .*nope \(from MOE_DATA_DIR\) does not exist/);
    assert.throws(() => loadDomain('klingon'), /unknown corpus domain "klingon" \(known: shakespeare, wikitext, linux\)/);
  } finally {
    if (saved === undefined) delete process.env.MOE_DATA_DIR;
    else process.env.MOE_DATA_DIR = saved;
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('shared domains load when shared/data/text is present above the package', (t) => {
  const shared = findSharedTextDir();
  if (!shared) {
    t.skip('no shared/data/text on this machine');
    return;
  }
  const linux = loadDomain('linux');
  const expect = fs.readFileSync(path.join(shared, 'linux-train.txt'), 'utf8') + fs.readFileSync(path.join(shared, 'linux-valid.txt'), 'utf8');
  assert.equal(linux, expect);
  assert.ok(loadDomain('wikitext').length > 1_000_000);
});
