import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  corpusDir,
  DOMAINS,
  embeddedCorpusPath,
  embeddedDataDir,
  firstInvalidUtf8,
  listCorpora,
  loadCorpus,
  loadCorpusSplits,
  loadDomain,
  packageRoot,
  readTextFile,
  readTextFolder,
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
    assert.deepEqual(loadCorpusSplits('linux', { dataDir: dir }), { train: 'int main() {\n', valid: '  return 0;\n}\n' });
    assert.throws(() => loadDomain('wikitext', { dataDir: dir }), /corpus domain "wikitext": file not found: .*wikitext2-valid\.txt/);
    process.env.MOE_DATA_DIR = dir;
    assert.equal(corpusDir(), dir);
    assert.deepEqual(resolveDomainFiles('linux'), [path.join(dir, 'linux-train.txt'), path.join(dir, 'linux-valid.txt')]);
    process.env.MOE_DATA_DIR = path.join(dir, 'nope');
    assert.throws(() => corpusDir(), /data directory .*nope \(from MOE_DATA_DIR\) does not exist/);
    assert.throws(() => loadDomain('klingon'), /unknown corpus domain "klingon" \(known: shakespeare, wikitext, linux\)/);
  } finally {
    if (saved === undefined) delete process.env.MOE_DATA_DIR;
    else process.env.MOE_DATA_DIR = saved;
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('the three corpora are embedded, with their own splits and no WikiText test split', () => {
  const saved = process.env.MOE_DATA_DIR;
  delete process.env.MOE_DATA_DIR;
  try {
    const data = embeddedDataDir();
    assert.equal(corpusDir(), data);
    const linux = loadCorpusSplits('linux');
    assert.equal(linux.train, fs.readFileSync(path.join(data, 'linux-train.txt'), 'utf8'));
    assert.equal(linux.valid, fs.readFileSync(path.join(data, 'linux-valid.txt'), 'utf8'));
    const wiki = loadCorpusSplits('wikitext');
    assert.equal(wiki.valid, undefined, 'wikitext has only its validation split: the dataset holds out its tail');
    assert.ok(wiki.train.startsWith(' \n = Homarus gammarus = '), 'the WikiText-2 validation split');
    // no corpus file is a test split, and every file is listed in data/SOURCES.md with its license
    const sources = fs.readFileSync(path.join(data, 'SOURCES.md'), 'utf8');
    for (const [name, spec] of Object.entries(DOMAINS)) {
      for (const f of [spec.train, spec.valid].filter((x): x is string => x !== undefined)) {
        assert.ok(!/test/.test(f), `${name}: ${f} looks like a test split`);
        assert.ok(fs.existsSync(path.join(data, f)), `${f} is embedded`);
        assert.ok(sources.includes(f), `${f} is described in SOURCES.md`);
      }
      assert.ok(sources.includes(spec.license), `${name}'s license ${spec.license} is in SOURCES.md`);
    }
    const list = listCorpora();
    assert.deepEqual(list.map((c) => c.name), ['shakespeare', 'wikitext', 'linux']);
    const li = list.find((c) => c.name === 'linux')!;
    assert.deepEqual(li.files.map((f) => [f.split, f.bytes]), [['train', fs.statSync(path.join(data, 'linux-train.txt')).size], ['valid', fs.statSync(path.join(data, 'linux-valid.txt')).size]]);
    for (const c of list) assert.ok(c.bytes > 100_000 && c.bytes < 4_000_000, `${c.name}: ${c.bytes} bytes, a few MB at most`);
  } finally {
    if (saved !== undefined) process.env.MOE_DATA_DIR = saved;
  }
});

test('a folder of text files is a corpus: sorted, binary files skipped, bounded', () => {
  const dir = tmpdir();
  try {
    fs.mkdirSync(path.join(dir, 'sub'));
    fs.mkdirSync(path.join(dir, '.git'));
    fs.writeFileSync(path.join(dir, 'b.md'), 'second');
    fs.writeFileSync(path.join(dir, 'a.txt'), 'first\n');
    fs.writeFileSync(path.join(dir, 'sub', 'c.c'), 'int x;\n');
    fs.writeFileSync(path.join(dir, '.git', 'HEAD'), 'ref: x\n');
    fs.writeFileSync(path.join(dir, 'img.bin'), Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x00, 0x01]));
    const r = readTextFolder(dir);
    assert.equal(r.text, 'first\nsecond\nint x;\n');
    assert.deepEqual(r.skipped, [path.join(dir, 'img.bin')]);
    assert.deepEqual(loadCorpusSplits(dir), { train: 'first\nsecond\nint x;\n' });
    assert.throws(() => readTextFolder(dir, { maxFiles: 2, maxBytes: 1e9, maxDepth: 16 }), /more than 2 files/);
    assert.throws(() => readTextFolder(dir, { maxFiles: 100, maxBytes: 10, maxDepth: 16 }), /more than 10 bytes/);
    assert.throws(() => readTextFolder(dir, { maxFiles: 100, maxBytes: 1e9, maxDepth: 0 }), /nested deeper than 0 levels/);
    const bin = path.join(dir, 'sub');
    fs.rmSync(path.join(bin, 'c.c'));
    fs.writeFileSync(path.join(bin, 'x.bin'), Buffer.from([0, 1, 2]));
    assert.throws(() => readTextFolder(bin), /holds no UTF-8 text files \(1 binary or non-UTF-8 files skipped\)/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
