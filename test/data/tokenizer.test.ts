import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  BpeTokenizer,
  ByteTokenizer,
  createStreamDecoder,
  GPT2_PATTERN,
  loadTokenizer,
  loadTokenizerFile,
  
} from '../../src/data/tokenizer/index.js';
import { loadDomain } from '../../src/data/corpus.js';
import { saveTokenizer } from '../../src/io/tokenizer.js';

const UNICODE = 'héllo wörld — 日本語 テキスト 🙂👍🏽 مرحبا\n\ttabs  and  spaces ';

const shakespeare = loadDomain('shakespeare');

test('byte tokenizer round trips unicode and tolerates split characters', () => {
  const t = new ByteTokenizer();
  assert.equal(t.vocabSize, 256);
  const ids = t.encode(UNICODE);
  assert.equal(ids.length, Buffer.byteLength(UNICODE));
  assert.equal(t.decode(ids), UNICODE);
  const smile = t.encode('🙂'); // 4 bytes
  assert.equal(smile.length, 4);
  assert.equal(t.decode(smile.subarray(0, 2)), '\ufffd');
  assert.equal(t.decode([...t.encode('a'), ...smile.subarray(1)]), 'a\ufffd\ufffd\ufffd');
  assert.throws(() => t.decode([65, 256]), /token id 256 at position 1 is outside the vocabulary \[0, 256\)/);
  assert.deepEqual(loadTokenizer(t.toJSON()).encode('ab'), t.encode('ab'));
});

test('stream decoder holds back split multibyte characters', () => {
  const t = new ByteTokenizer();
  const ids = t.encode(UNICODE);
  const d = createStreamDecoder(t);
  let out = '';
  for (const id of ids) out += d.push(id);
  out += d.flush();
  assert.equal(out, UNICODE);
  const d2 = createStreamDecoder(t);
  assert.equal(d2.push(t.encode('🙂').subarray(0, 3)), '');
  assert.equal(d2.push(t.encode('🙂').subarray(3)), '🙂');
});

/** Reference BPE: full recount per merge, same tie-break (count desc, then smaller [a, b]). */
function naiveBpe(corpus: string, vocabSize: number): { merges: [number, number][]; words: Map<string, number[]> } {
  const re = new RegExp(GPT2_PATTERN, 'gu');
  const counts = new Map<string, number>();
  for (const m of corpus.matchAll(re)) counts.set(m[0], (counts.get(m[0]) ?? 0) + 1);
  const words = new Map<string, number[]>();
  for (const w of counts.keys()) words.set(w, Array.from(Buffer.from(w, 'utf8')));
  const merges: [number, number][] = [];
  while (256 + merges.length < vocabSize) {
    const pc = new Map<string, number>();
    for (const [w, s] of words) for (let i = 0; i + 1 < s.length; i++) pc.set(`${s[i]},${s[i + 1]}`, (pc.get(`${s[i]},${s[i + 1]}`) ?? 0) + counts.get(w)!);
    let best: [number, number] | null = null;
    let bc = 0;
    for (const [k, c] of pc) {
      const [a, b] = k.split(',').map(Number);
      if (c > bc || (c === bc && best && (a < best[0] || (a === best[0] && b < best[1])))) {
        best = [a, b];
        bc = c;
      }
    }
    if (!best || bc < 2) break;
    const id = 256 + merges.length;
    merges.push(best);
    for (const [w, s] of words) {
      const ns: number[] = [];
      for (let i = 0; i < s.length; ) {
        if (i + 1 < s.length && s[i] === best[0] && s[i + 1] === best[1]) {
          ns.push(id);
          i += 2;
        } else ns.push(s[i++]);
      }
      words.set(w, ns);
    }
  }
  return { merges, words };
}

test('incremental BPE training equals a full-recount reference', () => {
  const corpus = shakespeare.slice(0, 20000) + ' aaaa aaaaa aaaaaaa ' + UNICODE;
  const ref = naiveBpe(corpus, 400);
  const tok = BpeTokenizer.train(corpus, { vocabSize: 400 });
  assert.deepEqual(tok.toJSON().merges, ref.merges);
  // encoding a training word reproduces the training segmentation
  for (const [w, s] of ref.words) assert.deepEqual(Array.from(tok.encode(w)), s, JSON.stringify(w));
});

test('BPE round trips real text from every domain and compresses Shakespeare', () => {
  const tok = BpeTokenizer.train(shakespeare, { vocabSize: 512 });
  assert.equal(tok.vocabSize, 512);
  const ids = tok.encode(shakespeare);
  assert.equal(tok.decode(ids), shakespeare);
  const ratio = Buffer.byteLength(shakespeare) / ids.length;
  assert.ok(ratio > 1.5, `compression ratio ${ratio}`);
  for (const id of ids) assert.ok(id >= 0 && id < 512);
  for (const name of ['wikitext', 'linux'] as const) {
    let text: string;
    try {
      text = loadDomain(name).slice(0, 100_000);
    } catch {
      continue; // shared data not present on this machine
    }
    assert.equal(tok.decode(tok.encode(text)), text, name);
  }
  assert.equal(tok.decode(tok.encode(UNICODE)), UNICODE);
  assert.equal(tok.decode(tok.encode('')), '');
  // merges never cross a pre-token boundary: no token contains a letter followed by a space
  for (let id = 256; id < tok.vocabSize; id++) {
    const s = Buffer.from(tok.tokenBytes(id)).toString('latin1');
    assert.ok(!/[a-zA-Z] /.test(s), `token ${id} ${JSON.stringify(s)}`);
  }
});

test('BPE training is deterministic and save/load preserves it', () => {
  const corpus = shakespeare.slice(0, 200_000);
  const a = BpeTokenizer.train(corpus, { vocabSize: 300 });
  const b = BpeTokenizer.train(corpus, { vocabSize: 300 });
  assert.deepEqual(a.toJSON(), b.toJSON());
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'moe-tok-'));
  try {
    const file = path.join(dir, 'tok.json');
    saveTokenizer(file, a);
    const c = loadTokenizerFile(file);
    assert.equal(c.name, 'bpe-300');
    assert.deepEqual(c.toJSON(), a.toJSON());
    const sample = corpus.slice(5000, 9000);
    assert.deepEqual(c.encode(sample), a.encode(sample));
    const j = JSON.parse(fs.readFileSync(file, 'utf8'));
    assert.equal(j.type, 'bpe');
    assert.equal(j.version, 1);
    assert.equal(j.vocab_size, 300);
    assert.equal(j.merges.length, 44);
    assert.throws(() => loadTokenizerFile(path.join(dir, 'nope.json')), /tokenizer file not found: .*nope\.json/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  // a tiny corpus stops early instead of inventing merges
  const tiny = BpeTokenizer.train('ab ab ab cd', { vocabSize: 1000 });
  assert.ok(tiny.vocabSize < 1000);
  assert.throws(() => BpeTokenizer.train('x', { vocabSize: 100 }), /vocabSize must be an integer in \[256/);
});

test('malformed tokenizer JSON gives errors naming the field', () => {
  const good = { type: 'bpe', version: 1, vocab_size: 258, merges: [[104, 101], [256, 108]] };
  assert.equal(loadTokenizer(good).vocabSize, 258);
  const cases: [unknown, RegExp][] = [
    ['{not json', /not valid JSON/],
    [[1, 2], /expected an object/],
    [{ version: 1 }, /field type missing/],
    [{ type: 'wordpiece', version: 1 }, /unknown type "wordpiece" \(field type; known: byte, bpe, hf\)/],
    [{ ...good, version: 2 }, /field version must be 1/],
    [{ ...good, merges: 'x' }, /field merges must be an array/],
    [{ ...good, merges: [[104, 101], [256]] }, /field merges\[1\] must be a pair of integer ids/],
    [{ ...good, merges: [[104, 101], [1.5, 2]] }, /field merges\[1\] must be a pair of integer ids/],
    [{ ...good, merges: [[104, 101], [257, 108]] }, /field merges\[1\] = \[257, 108\] refers to an unknown token id \(ids before this merge are < 257\)/],
    [{ ...good, merges: [[104, -1], [256, 108]] }, /field merges\[0\] = \[104, -1\] refers to an unknown token id/],
    [{ ...good, merges: [[104, 101], [104, 101]] }, /field merges\[1\] = \[104, 101\] duplicates merges\[0\]/],
    [{ ...good, vocab_size: 300 }, /field vocab_size is 300, but 256 bytes \+ 2 merges give 258/],
    [{ ...good, vocab_size: '258' }, /field vocab_size must be an integer/],
    [{ ...good, pattern: '(' }, /field pattern is not a valid regular expression/],
    [{ type: 'byte', version: 1, vocab_size: 300 }, /field vocab_size must be 256 for type "byte"/],
  ];
  for (const [json, re] of cases) assert.throws(() => loadTokenizer(json), re, JSON.stringify(json));
});
