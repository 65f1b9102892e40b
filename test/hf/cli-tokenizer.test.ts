// `generate --model DIR` and `chat --model DIR` on a Hugging Face directory with its own tokenizer
// files: the prompt gets the tokenizer's special tokens as transformers adds them, generation stops
// at generation_config.json's eos, and savePretrainedWithTokenizer writes tokenizer.json too.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { savePretrained, savePretrainedWithTokenizer, fromPretrainedWithTokenizer } from '../../src/io/hf/pretrained.js';
import { loadHfTokenizerFiles } from '../../src/io/hf-tokenizer.js';
import { MoETransformerLM } from '../../src/models/transformer.js';
import { parseModelConfig } from '../../src/models/config.js';
import { generate } from '../../src/infer/generate.js';
import { ChatSession } from '../../src/infer/chat.js';
import { ByteTokenizer } from '../../src/data/tokenizer/index.js';
import { tmpDir } from '../train/helpers.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const cli = path.resolve(here, '..', '..', 'src', 'cli', 'main.js');
const TOK = path.resolve(here, '..', '..', '..', 'test', 'fixtures', 'tokenizers');

function run(args: string[], input?: string): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', input, env: { ...process.env, MOE_BACKEND: 'js' }, timeout: 120_000 });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** A tiny random Mixtral-like model saved as a HF directory with the fixture tokenizer `tok`. */
function hfDir(tok: string, seed: number): string {
  const model = new MoETransformerLM(
    parseModelConfig({
      vocab_size: 288,
      hidden_size: 16,
      num_hidden_layers: 1,
      num_attention_heads: 2,
      num_local_experts: 4,
      num_experts_per_tok: 2,
      moe_intermediate_size: 16,
      max_position_embeddings: 64,
    }),
    seed,
  );
  const dir = path.join(tmpDir('hftok'), 'model');
  savePretrained(model, dir);
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) fs.copyFileSync(path.join(TOK, tok, f), path.join(dir, f));
  return dir;
}

test('generate --model DIR: the prompt gets the special tokens (<s>) and generation stops at generation_config eos', () => {
  const dir = hfDir('spm-legacy', 3);
  const { model, tokenizer } = fromPretrainedWithTokenizer(dir);
  const bos = tokenizer.special!.bos!.id;
  const prompt = 'hello world';
  const plain = tokenizer.encode(prompt);
  const withSpecial = tokenizer.encode(prompt, { addSpecialTokens: true });
  assert.equal(withSpecial[0], bos);
  assert.equal(withSpecial.length, plain.length + 1);
  const args = ['generate', '--model', dir, '--prompt', prompt, '--max-tokens', '6', '--temperature', '0', '--json'];
  const r = run(args);
  assert.equal(r.code, 0, r.stderr);
  const got = JSON.parse(r.stdout) as { ids: number[]; promptTokens: number; stopReason: string };
  assert.equal(got.promptTokens, withSpecial.length);
  const want = generate(model, tokenizer, prompt, { maxNewTokens: 6, temperature: 0, addSpecialTokens: true, stopTokenIds: tokenizer.special!.stopIds });
  assert.deepEqual(got.ids, Array.from(want.ids));
  // generation_config.json's eos_token_id ends the generation at the first token that matches
  const stopAt = got.ids[2];
  fs.writeFileSync(path.join(dir, 'generation_config.json'), JSON.stringify({ eos_token_id: [stopAt] }));
  const s = JSON.parse(run(args).stdout) as { ids: number[]; stopReason: string };
  assert.deepEqual(s.ids, got.ids.slice(0, got.ids.indexOf(stopAt) + 1));
  assert.notEqual(s.stopReason, 'length');
});

test('chat --model DIR: replies equal a ChatSession over the same directory, with its chat template', () => {
  const dir = hfDir('bytelevel-chatml', 4);
  const { model, tokenizer } = fromPretrainedWithTokenizer(dir);
  const r = run(['chat', '--model', dir, '--max-tokens', '5', '--temperature', '0'], 'hi there\n');
  assert.equal(r.code, 0, r.stderr);
  const session = new ChatSession(model, tokenizer, { maxNewTokens: 5, temperature: 0, topK: 0, topP: 1, seed: 0 });
  const reply = session.send('hi there').text;
  assert.ok(reply.length > 0, 'a non-empty reply to compare');
  assert.ok(r.stdout.includes(reply), `stdout ${JSON.stringify(r.stdout)} lacks ${JSON.stringify(reply)}`);
  assert.match(run(['chat', '--model', dir, '--ckpt', dir]).stderr, /give --model or --ckpt, not both/);
});

test('savePretrainedWithTokenizer writes tokenizer.json + tokenizer_config.json that load and round-trip, and refuses to clobber them', () => {
  const model = new MoETransformerLM(parseModelConfig({ vocab_size: 256, hidden_size: 8, num_hidden_layers: 1, num_attention_heads: 2, num_local_experts: 2, moe_intermediate_size: 8 }), 1);
  const dir = path.join(tmpDir('hftok2'), 'm');
  const files = savePretrainedWithTokenizer(model, new ByteTokenizer(), dir);
  for (const f of ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']) assert.ok(files.includes(f) && fs.existsSync(path.join(dir, f)), f);
  const hf = loadHfTokenizerFiles(dir);
  const text = 'Hello, wörld 🙂\n\ttabs  and  spaces';
  assert.equal(hf.decode(hf.encode(text)), text);
  assert.deepEqual(Array.from(hf.encode(text)), Array.from(new ByteTokenizer().encode(text)));
  // a directory holding only someone's tokenizer.json: refused before any weight is written
  const other = path.join(tmpDir('hftok3'), 'm');
  fs.mkdirSync(other);
  fs.writeFileSync(path.join(other, 'tokenizer.json'), '{}');
  assert.throws(() => savePretrainedWithTokenizer(model, new ByteTokenizer(), other), /tokenizer\.json already exists; pass overwrite/);
  assert.deepEqual(fs.readdirSync(other), ['tokenizer.json']);
  savePretrainedWithTokenizer(model, new ByteTokenizer(), other, { overwrite: true });
  assert.equal(loadHfTokenizerFiles(other).vocabSize, 256);
});
