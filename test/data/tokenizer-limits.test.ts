// Issue 8 case 5: hostile tokenizer data (a catastrophic-backtracking pattern, self-doubling merges),
// from a tokenizer file and from a checkpoint's state.json.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadTokenizer, loadTokenizerFile, BpeTokenizer, GPT2_PATTERN, checkSafePattern, MAX_TOKEN_BYTES } from '../../src/data/tokenizer/index.js';
import { tmpDir } from '../train/helpers.js';

/** 90 bytes: GPT-2's pattern with the letter branch as a repeated alternation of repeats, exponential in the word length. */
export const HOSTILE_PATTERN = String.raw`'s|'t|'re|'ve|'m|'ll|'d|(?:\p{L}+|\p{Ll}+)+[!?.]| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`;

const here = path.dirname(fileURLToPath(import.meta.url));

test('the hostile 90-byte pattern is refused at load, in bounded time, from a file and from JSON', () => {
  assert.equal(Buffer.byteLength(HOSTILE_PATTERN), 90);
  const dir = tmpDir('hostile');
  const file = path.join(dir, 'tok.json');
  fs.writeFileSync(file, JSON.stringify({ type: 'bpe', version: 1, vocab_size: 256, pattern: HOSTILE_PATTERN, merges: [] }));
  // in a child with a deadline, so a regression hangs the child, not the test run
  const script = `
    const { loadTokenizerFile } = await import(${JSON.stringify(path.join(here, '../../src/data/tokenizer/index.js'))});
    try { loadTokenizerFile(${JSON.stringify(file)}).encode('Honorificabilitudinitatibus and incomprehensibilities.'); console.log('loaded'); }
    catch (e) { console.log('refused: ' + e.message); }`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.signal, null, 'finished before the deadline');
  assert.match(r.stdout, /^refused: tokenizer file .*tok\.json: tokenizer JSON: field pattern repeats a group at offset 24/);
  assert.throws(() => loadTokenizer({ type: 'bpe', version: 1, vocab_size: 256, pattern: HOSTILE_PATTERN, merges: [] }), /field pattern repeats a group/);
});

test('safe patterns: GPT-2 and Llama-3-style pass; nested repeats, backreferences, lookbehind, too many repeats and huge patterns fail', () => {
  checkSafePattern(GPT2_PATTERN);
  checkSafePattern(String.raw`[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`);
  for (const [p, re] of [
    [String.raw`(a+)+b`, /repeats a group/],
    [String.raw`(a|aa)*`, /repeats a group/],
    [String.raw`(\w)\1`, /backreference/],
    [String.raw`(?<=a)b`, /lookbehind/],
    ['a*a*a*a*b', /4 repeated parts in one branch/],
    ['a'.repeat(2000), /2000 characters long/],
    ['(', /not a valid regular expression/],
  ] as const) {
    assert.throws(() => checkSafePattern(p), re, p);
  }
  // the checked pattern still tokenises as before
  const tok = BpeTokenizer.train('hello world, hello there. '.repeat(20), { vocabSize: 270 });
  assert.equal(tok.decode(tok.encode('hello world')), 'hello world');
});

test('self-doubling merges are refused before allocating (36 merges would need ~137 GB)', () => {
  const merges: [number, number][] = [[97, 97]];
  for (let i = 1; i < 36; i++) merges.push([255 + i, 255 + i]);
  const json = { type: 'bpe', version: 1, vocab_size: 256 + merges.length, merges };
  assert.ok(JSON.stringify(json).length < 500);
  const before = process.memoryUsage().arrayBuffers;
  assert.throws(() => loadTokenizer(json), new RegExp(`field merges\\[12\\] = \\[267, 267\\] makes a token of 8192 bytes, more than the limit of ${MAX_TOKEN_BYTES}`));
  assert.ok(process.memoryUsage().arrayBuffers - before < 64 * 1024 * 1024, 'nothing big was allocated');
  // a tokenizer file with the same merges fails the same way, naming the file
  const dir = tmpDir('doubling');
  const file = path.join(dir, 'tok.json');
  fs.writeFileSync(file, JSON.stringify(json));
  assert.throws(() => loadTokenizerFile(file), /tokenizer file .*tok\.json: .*merges\[12\]/);
});
