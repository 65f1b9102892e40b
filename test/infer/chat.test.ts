// Chat templates rendered by @huggingface/jinja against hand-written expected strings (ChatML /
// Qwen2, Llama-2, the moe-ts default), the no-template error, and ChatSession: prompts, history,
// stop tokens and the context limit, on an HF tokenizer fixture.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { MoETransformerLM } from '../../src/models/transformer.js';
import { parseModelConfig, parseRunConfig } from '../../src/models/config.js';
import { saveCheckpoint, CHECKPOINT_FORMAT, CHECKPOINT_VERSION } from '../../src/io/checkpoint.js';
import { DEFAULT_CHAT_TEMPLATE, ByteTokenizer, type Tokenizer } from '../../src/data/tokenizer/index.js';
import { loadHfTokenizerFiles } from '../../src/io/hf-tokenizer.js';
import { ChatSession, generate, loadModelForInference, renderChatTemplate, resolveChatTemplate } from '../../src/infer/index.js';

const FIX = path.join(path.dirname(fileURLToPath(import.meta.url)), '../../../test/fixtures/tokenizers');
const chatml = loadHfTokenizerFiles(path.join(FIX, 'bytelevel-chatml'));
const llama = loadHfTokenizerFiles(path.join(FIX, 'spm-legacy'));

test('ChatML (Qwen2-style) template: default system message, turns, generation prompt', () => {
  const tpl = chatml.chatTemplate!;
  assert.equal(renderChatTemplate(tpl, [{ role: 'user', content: 'hi' }]), '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n');
  assert.equal(
    renderChatTemplate(
      tpl,
      [
        { role: 'system', content: 'Be brief.' },
        { role: 'user', content: 'hi' },
        { role: 'assistant', content: 'hello' },
        { role: 'user', content: '2+2?' },
      ],
      { addGenerationPrompt: false },
    ),
    '<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nhello<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n',
  );
});

test('Llama-2 template: bos/eos tokens, <<SYS>> folded into the first turn, raise_exception', () => {
  const tpl = llama.chatTemplate!;
  const opts = { bosToken: '<s>', eosToken: '</s>' };
  assert.equal(
    renderChatTemplate(
      tpl,
      [
        { role: 'system', content: 'Be brief.' },
        { role: 'user', content: ' hi ' },
        { role: 'assistant', content: 'hello' },
        { role: 'user', content: 'bye' },
      ],
      opts,
    ),
    // strip() applies to the whole folded content, so the user's leading space stays after <</SYS>>
    '<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\n hi [/INST] hello </s><s>[INST] bye [/INST]',
  );
  assert.equal(renderChatTemplate(tpl, [{ role: 'user', content: ' hi ' }], opts), '<s>[INST] hi [/INST]');
  assert.throws(
    () =>
      renderChatTemplate(
        tpl,
        [
          { role: 'user', content: 'a' },
          { role: 'user', content: 'b' },
        ],
        opts,
      ),
    /chat template: .*Conversation roles must alternate user\/assistant/,
  );
  assert.throws(() => renderChatTemplate('{% for m in messages %}', []), /chat template: cannot parse/);
  // the rendered text tokenises with <s> as the special token, not its characters
  const ids = llama.encode(renderChatTemplate(tpl, [{ role: 'user', content: 'hello' }], opts));
  assert.equal(ids[0], 1);
  assert.equal(ids.filter((i) => i === 1).length, 1);
});

test('moe-ts default template and the error for a model without one', () => {
  assert.equal(
    renderChatTemplate(DEFAULT_CHAT_TEMPLATE, [
      { role: 'system', content: 'S' },
      { role: 'user', content: 'hi' },
      { role: 'assistant', content: 'yo' },
      { role: 'user', content: 'ok' },
    ]),
    '<|system|>\nS\n<|user|>\nhi\n<|assistant|>\nyo\n<|user|>\nok\n<|assistant|>\n',
  );
  assert.equal(resolveChatTemplate(new ByteTokenizer()), DEFAULT_CHAT_TEMPLATE);
  const none = loadHfTokenizerFiles(path.join(FIX, 'spm-metaspace'));
  assert.throws(() => resolveChatTemplate(none), /tokenizer \(hf-bpe-277\) has no chat template .*--template FILE/);
  assert.equal(resolveChatTemplate(none, '{{ 1 }}'), '{{ 1 }}');
});

const tinyCfg = (vocab: number, maxPos = 96): Record<string, unknown> => ({
  vocab_size: vocab,
  hidden_size: 16,
  num_hidden_layers: 1,
  num_attention_heads: 2,
  moe_intermediate_size: 16,
  num_local_experts: 4,
  num_experts_per_tok: 2,
  max_position_embeddings: maxPos,
  initializer_range: 0.3,
});

function tinyModel(vocab: number, maxPos = 96): MoETransformerLM {
  return new MoETransformerLM(parseModelConfig(tinyCfg(vocab, maxPos)), 3).eval();
}

test('ChatSession: rendered prompts carry the whole history; eos ends a reply', () => {
  const model = tinyModel(chatml.vocabSize);
  const s = new ChatSession(model, chatml, { maxNewTokens: 5, temperature: 0 });
  const r1 = s.send('hi');
  assert.equal(r1.prompt, '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n');
  assert.equal(r1.promptTokens, chatml.encode(r1.prompt).length);
  assert.equal(r1.ids.length, 5);
  assert.equal(r1.text, chatml.decode(r1.ids));
  const r2 = s.send('more');
  assert.equal(r2.prompt, r1.prompt + r1.text + '<|im_end|>\n<|im_start|>user\nmore<|im_end|>\n<|im_start|>assistant\n');
  assert.deepEqual(
    s.messages.map((m) => m.role),
    ['user', 'assistant', 'user', 'assistant'],
  );
  s.reset();
  assert.equal(s.messages.length, 0);

  // the greedy reply's first token, declared an eos id, ends the reply before any text
  const first = r1.ids[0];
  const stopper: Tokenizer = Object.create(chatml, { special: { value: { ...chatml.special, stopIds: [first] } } });
  const s2 = new ChatSession(model, stopper, { maxNewTokens: 5, temperature: 0 });
  const r3 = s2.send('hi');
  assert.equal(r3.stopReason, 'stop_token');
  assert.deepEqual([...r3.ids], [first]);
  assert.equal(r3.text, '');
  assert.equal(s2.messages[1].content, '');
});

test('generate: stopTokenIds stops at the sampled id and rejects bad ids', () => {
  const model = tinyModel(256);
  const tok = new ByteTokenizer();
  const free = generate(model, tok, 'ab', { maxNewTokens: 6, temperature: 0 });
  const k = 3;
  const r = generate(model, tok, 'ab', { maxNewTokens: 6, temperature: 0, stopTokenIds: [free.ids[k]] });
  const at = [...free.ids].indexOf(free.ids[k]);
  assert.deepEqual([...r.ids], [...free.ids.subarray(0, at + 1)]);
  assert.equal(r.stopReason, 'stop_token');
  assert.equal(r.text, tok.decode(free.ids.subarray(0, at)));
  assert.throws(() => generate(model, tok, 'ab', { maxNewTokens: 2, stopTokenIds: [1.5] }), /stopTokenIds\[0\] must be a token id/);
  // addSpecialTokens: the prompt gets the post-processor's <s> (ids [1, ▁hello 271, ▁world 276])
  const lm = tinyModel(llama.vocabSize);
  assert.equal(generate(lm, llama, 'hello world', { maxNewTokens: 1 }).promptTokens, 2);
  assert.equal(generate(lm, llama, 'hello world', { maxNewTokens: 1, addSpecialTokens: true }).promptTokens, 3);
});

test('ChatSession: the oldest exchanges leave the prompt when the context is full, the history stays', () => {
  const model = tinyModel(256, 64);
  const s = new ChatSession(model, new ByteTokenizer(), { maxNewTokens: 4, temperature: 0, system: 'S' });
  for (let i = 0; i < 4; i++) s.send(`turn ${i}`);
  const r = s.send('last');
  assert.ok(r.droppedTurns >= 2, `dropped ${r.droppedTurns}`);
  assert.ok(r.promptTokens + 4 <= 64);
  assert.ok(r.prompt.startsWith('<|system|>\nS\n'), 'the system message is kept');
  assert.ok(r.prompt.endsWith('<|user|>\nlast\n<|assistant|>\n'));
  assert.equal(s.messages.length, 1 + 2 * 5);
});

test('a moe-ts checkpoint with an HF tokenizer chats the same after save and load', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'moe-chat-'));
  try {
    const model = tinyModel(llama.vocabSize);
    saveCheckpoint(dir, {
      state: {
        format: CHECKPOINT_FORMAT,
        version: CHECKPOINT_VERSION,
        step: 1,
        config: parseRunConfig({ model: tinyCfg(llama.vocabSize) }),
        tokenizer: llama.toJSON(),
        optimizerStep: 1,
        dataState: { rng: [1, 2, 3, 4], step: 0 },
        rngState: [1, 2, 3, 4],
      },
      model: model.stateDict(),
      optimizer: { step: 1, m: [], v: [] },
    });
    const loaded = loadModelForInference(dir);
    assert.equal(loaded.tokenizer.name, llama.name);
    assert.deepEqual(loaded.tokenizer.special, llama.special);
    const opts = { maxNewTokens: 6, temperature: 0.9, seed: 2, system: 'Be brief.' };
    const a = new ChatSession(model, llama, opts).send('hello world');
    const b = new ChatSession(loaded.model, loaded.tokenizer, opts).send('hello world');
    assert.equal(b.prompt, '<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nhello world [/INST]');
    assert.equal(b.text, a.text);
    assert.deepEqual([...b.ids], [...a.ids]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
