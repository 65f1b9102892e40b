import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Tokenizer as HfLib } from '@huggingface/tokenizers';
import { BpeTokenizer, ByteTokenizer, createStreamDecoder, HfTokenizer, loadTokenizer, type Tokenizer } from '../../src/data/tokenizer/index.js';
import { loadDomain } from '../../src/data/corpus.js';
import { loadHfTokenizerFiles, saveHfTokenizerFiles } from '../../src/io/hf-tokenizer.js';
import { tmpDir } from '../train/helpers.js';

const FIX = path.join(path.dirname(fileURLToPath(import.meta.url)), '../../../test/fixtures/tokenizers');
const load = (name: string): HfTokenizer => loadHfTokenizerFiles(path.join(FIX, name));

const TEXTS = [
  'hello world',
  ' hello  world\n\nfoo',
  'héllo wörld — 日本語 テキスト 🙂👍🏽 مرحبا',
  'function f(x) {\n\treturn x * 2; // double\n}\r\n',
  "It's 2026: 3.14 isn't π, naïve café\u0000\u007f",
  '   leading and trailing   ',
];

function stream(tok: Tokenizer, ids: ArrayLike<number>): string {
  const d = createStreamDecoder(tok);
  let s = '';
  for (let i = 0; i < ids.length; i++) s += d.push(ids[i]);
  return s + d.flush();
}

test('byte-level BPE fixture: GPT-2 byte ids, merges and added tokens give the hand-computed ids', () => {
  const t = load('bytelevel-chatml');
  assert.equal(t.vocabSize, 269);
  // merges: he(256) ll(257) hell(258) hello(259) Ġw(260) or(261) Ġwor(262) ld(263) Ġworld(264)
  assert.deepEqual([...t.encode('hello world')], [259, 264]);
  // GPT-2 base ids: printable byte b is b - 0x21 ('H' 39, 'e' 68, 'o' 78), '\n' 198, ' ' 220
  assert.deepEqual([...t.encode('Hello')], [39, 68, 257, 78]);
  assert.deepEqual([...t.encode('\n')], [198]);
  assert.deepEqual([...t.encode(' ')], [220]);
  // é = C3 A9: 0xC3 is 106 + (0xC3 - 0xAE) = 127, 0xA9 is 94 + (0xA9 - 0xA1) = 102
  assert.deepEqual([...t.encode('é')], [127, 102]);
  // special added tokens are matched inside text; 'user' = u s e r = 84 82 68 81
  assert.deepEqual([...t.encode('<|im_start|>user\nhi<|im_end|>')], [266, 84, 82, 68, 81, 198, 71, 72, 267]);
  assert.deepEqual([...t.encode('<tool>')], [268]);
  assert.equal(t.special.eos?.id, 267);
  assert.equal(t.special.pad?.content, '<|endoftext|>');
  assert.equal(t.special.bos, undefined);
  assert.deepEqual(t.special.stopIds, [267]);
  assert.equal(t.idToToken(264), 'Ġworld');
  assert.equal(t.tokenToId('Ġworld'), 264);
  assert.match(t.chatTemplate ?? '', /<\|im_start\|>/);
  for (const s of [...TEXTS, 'a<|im_end|>b<|endoftext|>']) {
    const ids = t.encode(s);
    assert.equal(t.decode(ids), s.normalize('NFC'));
    assert.equal(stream(t, ids), t.decode(ids), `stream of ${JSON.stringify(s)}`);
  }
  // a token cut inside a multibyte character: per-token bytes keep the partial bytes
  assert.deepEqual([...t.tokenBytes(127)], [0xc3]);
  assert.equal(t.decode([127]), '\ufffd');
  assert.throws(() => t.decode([1, 269]), /token id 269 at position 1 is outside the vocabulary \[0, 269\)/);
});

test('SentencePiece fixtures (legacy normalizer, Metaspace): ▁ words, <0xNN> byte fallback, <s> post-processor', () => {
  for (const name of ['spm-legacy', 'spm-metaspace']) {
    const t = load(name);
    assert.equal(t.vocabSize, 277, name);
    // ▁hello 271, ▁world 276
    assert.deepEqual([...t.encode('hello world')], [271, 276], name);
    assert.deepEqual([...t.encode('hello world', { addSpecialTokens: true })], [1, 271, 276], name);
    // 'i' is not in the vocabulary: byte fallback <0x69> = 3 + 0x69
    assert.deepEqual([...t.encode('hi')], [267, 3 + 0x69], name);
    // ▁ then é as its two bytes C3 A9
    assert.deepEqual([...t.encode('é')], [259, 3 + 0xc3, 3 + 0xa9], name);
    assert.deepEqual([...t.encode('Hello')], [259, 3 + 0x48, 268, 270], name);
    assert.deepEqual(t.special.bos, { id: 1, content: '<s>' });
    assert.deepEqual(t.special.eos, { id: 2, content: '</s>' });
    assert.deepEqual(t.special.unk, { id: 0, content: '<unk>' });
    assert.equal(t.decode([271, 276]), 'hello world');
    assert.deepEqual([...t.tokenBytes(271)], [...Buffer.from(' hello')]);
    assert.deepEqual([...t.tokenBytes(3 + 0x0a)], [0x0a]);
    assert.deepEqual([...t.tokenBytes(1)], [...Buffer.from('<s>')]);
    for (const s of TEXTS.slice(0, 4)) {
      const ids = t.encode(s, { addSpecialTokens: true });
      // after <s> nothing is stripped, so the stream is the decoded text
      assert.equal(stream(t, ids), t.decode(ids), `${name} ${JSON.stringify(s)}`);
      // without <s> the decoder drops the first token's leading space; a continuation streams exactly what it adds
      const plain = t.encode(s);
      assert.equal(stream(t, plain), (plain.length && t.tokenBytes(plain[0])[0] === 0x20 ? ' ' : '') + t.decode(plain));
      for (const cut of [1, 2, Math.floor(plain.length / 2), plain.length - 1]) {
        const head = t.decode(plain.subarray(0, cut));
        if (head.endsWith('\ufffd')) continue; // cut inside a byte-fallback character
        assert.equal(head + stream(t, plain.subarray(cut)), t.decode(plain), `${name} ${JSON.stringify(s)} cut ${cut}`);
      }
    }
    assert.equal(t.decode(t.encode('hello world\nfoo é 🙂', { addSpecialTokens: true })), '<s> hello world\nfoo é 🙂', name);
  }
  assert.match(load('spm-legacy').chatTemplate ?? '', /\[INST\]/);
  assert.equal(load('spm-metaspace').chatTemplate, undefined);
});

test('an HF tokenizer survives a moe-ts checkpoint (loadTokenizer of toJSON)', () => {
  const t = load('bytelevel-chatml');
  const j = JSON.parse(JSON.stringify(t.toJSON()));
  assert.equal(j.type, 'hf');
  const u = loadTokenizer(j);
  assert.ok(u instanceof HfTokenizer);
  for (const s of TEXTS) assert.deepEqual(u.encode(s), t.encode(s));
  assert.deepEqual(u.special, t.special);
  assert.equal(u.chatTemplate, t.chatTemplate);
  assert.throws(() => loadTokenizer({ ...j, vocab_size: 10 }), /field vocab_size is 10, but the tokenizer has 269 ids/);
  assert.throws(() => loadTokenizer({ ...j, tokenizer: 3 }), /field tokenizer must be the tokenizer.json object/);
  assert.throws(() => loadTokenizer({ ...j, version: 2 }), /field version must be 1 for type "hf"/);
});

test('moe-ts byte and trained BPE tokenizers export as tokenizer.json with the same ids and exact round trips', () => {
  const corpus = loadDomain('shakespeare');
  const bpe = BpeTokenizer.train(corpus.slice(0, 200_000), { vocabSize: 600 });
  const extra = corpus.slice(600_000, 610_000);
  for (const tok of [new ByteTokenizer(), bpe]) {
    const files = tok.toHuggingFace!();
    // the library itself, without the moe-ts wrapper
    const lib = new HfLib(files.tokenizer, files.config);
    const hf = new HfTokenizer(files);
    assert.equal(hf.vocabSize, tok.vocabSize);
    for (const s of [...TEXTS, extra]) {
      const ids = tok.encode(s);
      assert.deepEqual([...hf.encode(s)], [...ids], `${tok.name} ids of ${JSON.stringify(s.slice(0, 30))}`);
      assert.deepEqual(lib.encode(s, { add_special_tokens: false }).ids, [...ids]);
      assert.equal(lib.decode([...ids], { clean_up_tokenization_spaces: false }), s);
      assert.equal(hf.decode(ids), s);
      assert.equal(stream(hf, ids), s);
    }
    assert.equal(hf.chatTemplate, tok.chatTemplate);
    const dir = tmpDir('hftok');
    saveHfTokenizerFiles(tok, dir);
    const back = loadHfTokenizerFiles(dir);
    assert.deepEqual(back.encode(extra), tok.encode(extra));
    assert.throws(() => saveHfTokenizerFiles(tok, dir), /tokenizer\.json already exists \(pass overwrite/);
    saveHfTokenizerFiles(back, dir, { overwrite: true });
    assert.deepEqual(JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer.json'), 'utf8')), files.tokenizer);
  }
  // two merges spelling the same bytes ('ab'+'c' and 'a'+'bc') have no tokenizer.json form
  const dup = new BpeTokenizer([[97, 98], [256, 99], [98, 99], [97, 258]]);
  assert.throws(() => dup.toHuggingFace(), /tokens 257 and 259 have the same bytes "abc"/);
});

test('bad tokenizer files give one line naming the file or field', () => {
  const dir = tmpDir('hfbad');
  const tj = JSON.parse(fs.readFileSync(path.join(FIX, 'spm-legacy/tokenizer.json'), 'utf8'));
  const put = (name: string, body: string): string => {
    const d = path.join(dir, name);
    fs.mkdirSync(d, { recursive: true });
    fs.writeFileSync(path.join(d, 'tokenizer.json'), body);
    return d;
  };
  const cases: [string, RegExp][] = [
    [put('trunc', JSON.stringify(tj).slice(0, 500)), /trunc\/tokenizer\.json: not valid JSON/],
    [put('array', '[1, 2]'), /array\/tokenizer\.json: expected a JSON object/],
    [put('nomodel', '{"added_tokens": []}'), /nomodel\/tokenizer\.json: field model missing/],
    [put('negid', JSON.stringify({ ...tj, added_tokens: [{ id: -1, content: 'x' }] })), /negid\/tokenizer\.json: field added_tokens\[0\]\.id must be an integer id/],
    [put('badvocab', JSON.stringify({ ...tj, model: { ...tj.model, vocab: { a: 1.5 } } })), /field model\.vocab\["a"\] must be an integer id/],
    [put('baddec', JSON.stringify({ ...tj, decoder: { type: 'Nope' } })), /baddec\/tokenizer\.json: cannot build the tokenizer: .*Nope/],
    [path.join(dir, 'missing'), /missing\/tokenizer\.json: not found/],
  ];
  for (const [d, re] of cases) {
    assert.throws(() => loadHfTokenizerFiles(d), (e: Error) => re.test(e.message) && !e.message.includes('\n'), d);
  }
  const cfgDir = put('cfg', JSON.stringify(tj));
  fs.writeFileSync(path.join(cfgDir, 'tokenizer_config.json'), '{"eos_token": "<|nope|>"}');
  assert.throws(() => loadHfTokenizerFiles(cfgDir), /cfg\/tokenizer_config\.json: field eos_token is "<\|nope\|>", which is not in the vocabulary/);
  fs.writeFileSync(path.join(cfgDir, 'tokenizer_config.json'), '{"eos_token": ');
  assert.throws(() => loadHfTokenizerFiles(cfgDir), /cfg\/tokenizer_config\.json: not valid JSON/);
  fs.writeFileSync(path.join(cfgDir, 'tokenizer_config.json'), '{}');
  fs.writeFileSync(path.join(cfgDir, 'generation_config.json'), '{"eos_token_id": [2, 9999]}');
  assert.throws(() => loadHfTokenizerFiles(cfgDir), /stop id 9999 .*outside the vocabulary \[0, 277\)/);
  fs.writeFileSync(path.join(cfgDir, 'generation_config.json'), '{"eos_token_id": [2, 5]}');
  fs.writeFileSync(path.join(cfgDir, 'chat_template.jinja'), '{{ messages[0].content }}');
  const ok = loadHfTokenizerFiles(cfgDir);
  assert.deepEqual(ok.special.stopIds, [2, 5]);
  assert.equal(ok.chatTemplate, '{{ messages[0].content }}');
  const sub = path.join(dir, 'isdir');
  fs.mkdirSync(path.join(sub, 'tokenizer.json'), { recursive: true });
  assert.throws(() => loadHfTokenizerFiles(sub), /isdir\/tokenizer\.json: not a regular file/);
});

test('fuzz: a tokenizer.json with one field replaced either works or fails in one line naming a file', () => {
  const vals: unknown[] = [null, -1, 'x', [], {}, 1e9, 0.5, true, [1, 2], { type: 'Nope' }, { Regex: '(' }];
  const paths = (o: unknown, p: string[] = [], out: string[][] = []): string[][] => {
    if (p.length) out.push(p);
    if (o && typeof o === 'object') {
      for (const k of Object.keys(o)) {
        if (p[p.length - 1] === 'vocab' || (Array.isArray(o) && Number(k) > 3)) continue; // a few entries of long lists are enough
        paths((o as Record<string, unknown>)[k], [...p, k], out);
      }
    }
    return out;
  };
  let seed = 12345;
  const rand = (n: number): number => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return seed % n;
  };
  const warn = console.warn;
  console.warn = () => {}; // the library warns about unknown pattern types before failing
  let built = 0;
  try {
    for (const name of ['bytelevel-chatml', 'spm-legacy', 'spm-metaspace']) {
      const base = JSON.parse(fs.readFileSync(path.join(FIX, name, 'tokenizer.json'), 'utf8'));
      const config = JSON.parse(fs.readFileSync(path.join(FIX, name, 'tokenizer_config.json'), 'utf8'));
      const ps = paths(base);
      for (let i = 0; i < 120; i++) {
        const tj = structuredClone(base);
        const p = ps[rand(ps.length)];
        let o = tj;
        for (const k of p.slice(0, -1)) o = o[k];
        o[p[p.length - 1]] = vals[rand(vals.length)];
        let tok: HfTokenizer;
        try {
          tok = new HfTokenizer({ tokenizer: tj, config });
        } catch (e) {
          assert.ok(e instanceof Error && /^tokenizer(_config)?\.json: /.test(e.message) && !e.message.includes('\n'), `${name} ${p.join('.')}: ${(e as Error).message}`);
          continue;
        }
        built++;
        const ids = tok.encode('hello world é 🙂\n<s> x', { addSpecialTokens: true });
        tok.decode(ids);
        for (const id of ids) tok.tokenBytes(id);
      }
    }
  } finally {
    console.warn = warn;
  }
  assert.ok(built > 0 && built < 360, `built ${built}`);
});
