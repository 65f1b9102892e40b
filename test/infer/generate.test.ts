// KV-cached decoding against full forwards (dense and MoE), generate against a naive
// re-run-everything loop, seeds, streaming of multibyte text, stop text, the context limit
// (stop and slide) and loading a model from a checkpoint.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { noGrad } from '../../src/index.js';
import { Rng } from '../../src/tensor/random.js';
import { MoETransformerLM, type KVCache } from '../../src/models/transformer.js';
import { parseModelConfig, parseRunConfig, type ModelConfig } from '../../src/models/config.js';
import { ByteTokenizer, type Tokenizer } from '../../src/data/tokenizer/index.js';
import { saveCheckpoint, CHECKPOINT_FORMAT, CHECKPOINT_VERSION } from '../../src/io/checkpoint.js';
import { generate, loadModelForInference } from '../../src/infer/index.js';

const TINY = {
  vocab_size: 256,
  hidden_size: 16,
  num_hidden_layers: 2,
  num_attention_heads: 2,
  intermediate_size: 32,
  moe_intermediate_size: 16,
  max_position_embeddings: 48,
  // larger than the default 0.02 so logits are O(1) and routing decisions are not near-ties of tiny values
  initializer_range: 0.3,
};

const CONFIGS: Record<string, Record<string, unknown>> = {
  dense: { ...TINY, num_local_experts: 0 },
  'moe topk E=4 k=2': { ...TINY, num_local_experts: 4, num_experts_per_tok: 2, router_type: 'topk' },
  // dropless: capacity limits depend on the other tokens in a call, so a cache can't reproduce them
  'moe switch E=4 k=1': { ...TINY, num_local_experts: 4, num_experts_per_tok: 1, router_type: 'switch', dispatch: 'dropless' },
  'moe every other layer + shared expert': {
    ...TINY,
    num_hidden_layers: 3,
    num_local_experts: 4,
    num_experts_per_tok: 2,
    decoder_sparse_step: 2,
    n_shared_experts: 1,
    intermediate_size: 24,
  },
};

function makeModel(cfg: Record<string, unknown>, seed = 1): MoETransformerLM {
  return new MoETransformerLM(parseModelConfig(cfg), seed).eval();
}

const ctx = { training: false, step: 0, rng: new Rng(0) };

function fullLogits(model: MoETransformerLM, ids: Int32Array): Float32Array {
  return noGrad(() => model.forward(ids, 1, ids.length, { ctx }).logits.data.slice());
}

function randomIds(n: number, V: number, seed: number): Int32Array {
  const r = new Rng(seed);
  return Int32Array.from({ length: n }, () => r.int(V));
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

for (const [name, cfg] of Object.entries(CONFIGS)) {
  test(`KV cache (${name}): incremental logits equal the full forward at every position`, () => {
    const model = makeModel(cfg, 7);
    const V = model.config.vocab_size;
    const n = 20;
    const ids = randomIds(n, V, 3);
    const full = fullLogits(model, ids);
    let scale = 0;
    for (const v of full) scale = Math.max(scale, Math.abs(v));
    assert.ok(scale > 0.1, `logits too small (${scale}) for the comparison to mean anything`);
    // chunkings: one token at a time from an empty cache, and a prefill followed by mixed chunks
    for (const chunks of [new Array<number>(n).fill(1), [6, 1, 1, 3, 1, 5, 1, 2]]) {
      const cache: KVCache = model.emptyCache();
      let pos = 0;
      noGrad(() => {
        for (const c of chunks) {
          const out = model.forward(ids.slice(pos, pos + c), 1, c, { ctx, cache }).logits.data;
          const d = maxAbsDiff(out, full.subarray(pos * V, (pos + c) * V));
          assert.ok(d <= 1e-4, `positions ${pos}..${pos + c - 1} (chunks ${chunks.join(',')}): max |diff| ${d}`);
          pos += c;
          assert.equal(cache.length, pos);
        }
      });
    }
  });

  test(`generate (${name}): temperature 0 equals a naive loop re-running the full forward`, () => {
    const model = makeModel(cfg, 5);
    const tok = new ByteTokenizer();
    const prompt = 'To be, or not';
    const res = generate(model, tok, prompt, { maxNewTokens: 15, temperature: 0, topK: 0, topP: 1, seed: 1 });
    const seq = Array.from(tok.encode(prompt));
    const naive: number[] = [];
    for (let i = 0; i < 15; i++) {
      const l = fullLogits(model, Int32Array.from(seq));
      const row = l.subarray((seq.length - 1) * 256, seq.length * 256);
      let best = 0;
      for (let v = 1; v < 256; v++) if (row[v] > row[best]) best = v;
      naive.push(best);
      seq.push(best);
    }
    assert.deepEqual(Array.from(res.ids), naive);
    assert.equal(res.text, tok.decode(naive));
    assert.equal(res.promptTokens, tok.encode(prompt).length);
    assert.equal(res.stopReason, 'max_new_tokens');
    assert.ok(res.tokensPerSec > 0);
  });
}

test('generate: same seed gives the same text, another seed another text; the model is left in its mode', () => {
  const model = makeModel(CONFIGS['moe topk E=4 k=2'], 2);
  const tok = new ByteTokenizer();
  const opts = { maxNewTokens: 24, temperature: 1, topK: 0, topP: 1 };
  const a = generate(model, tok, 'Hello', { ...opts, seed: 9 });
  const b = generate(model, tok, 'Hello', { ...opts, seed: 9 });
  const c = generate(model, tok, 'Hello', { ...opts, seed: 10 });
  assert.deepEqual(Array.from(a.ids), Array.from(b.ids));
  assert.equal(a.text, b.text);
  assert.notDeepEqual(Array.from(a.ids), Array.from(c.ids));
  assert.equal(model.training, false);
  model.train();
  generate(model, tok, 'Hi', { ...opts, maxNewTokens: 2 });
  assert.equal(model.training, true, 'generate restores training mode');
});

test('generate: empty prompt and bad options fail clearly', () => {
  const model = makeModel(CONFIGS.dense);
  const tok = new ByteTokenizer();
  assert.throws(() => generate(model, tok, '', { maxNewTokens: 4 }), /empty prompt.*no BOS/);
  assert.throws(() => generate(model, tok, 'a', { maxNewTokens: -1 }), /maxNewTokens must be an integer >= 0/);
  assert.throws(() => generate(model, tok, 'a', { maxNewTokens: 2.5 }), /maxNewTokens/);
  assert.throws(() => generate(model, tok, 'a', { maxNewTokens: 2, temperature: -1 }), /temperature/);
  assert.throws(() => generate(model, tok, 'a', { maxNewTokens: 2, topP: 0 }), /topP/);
  assert.throws(() => generate(model, tok, 'a', { maxNewTokens: 2, stopOnText: '' }), /stopOnText must be a non-empty string/);
  assert.throws(() => generate(model, tok, 'a', { maxNewTokens: 2, contextOverflow: 'wrap' as 'stop' }), /contextOverflow/);
  assert.throws(() => generate(model, tok, 'x'.repeat(49), { maxNewTokens: 2 }), /prompt is 49 tokens, more than max_position_embeddings 48/);
  const zero = generate(model, tok, 'a', { maxNewTokens: 0 });
  assert.equal(zero.text, '');
  assert.equal(zero.ids.length, 0);
});

test('generate: context limit stops with a note, or slides the window', () => {
  const model = makeModel(CONFIGS['moe topk E=4 k=2'], 3);
  const tok = new ByteTokenizer();
  const prompt = 'abcdefghij'.repeat(4); // 40 of 48 positions
  const stopped = generate(model, tok, prompt, { maxNewTokens: 100, temperature: 0 });
  // the last sampled token needs no position of its own: 48 - 40 + 1
  assert.equal(stopped.ids.length, 9);
  assert.equal(stopped.stopReason, 'context_full');
  assert.match(stopped.note ?? '', /max_position_embeddings 48/);
  const slid = generate(model, tok, prompt, { maxNewTokens: 100, temperature: 0, contextOverflow: 'slide' });
  assert.equal(slid.ids.length, 100);
  assert.equal(slid.stopReason, 'max_new_tokens');
  assert.ok(slid.slides >= 2, `slides ${slid.slides}`);
  assert.deepEqual(Array.from(slid.ids.subarray(0, 9)), Array.from(stopped.ids), 'identical until the first slide');
  const long = generate(model, tok, 'y'.repeat(60), { maxNewTokens: 5, temperature: 0, contextOverflow: 'slide' });
  assert.equal(long.ids.length, 5);
  assert.match(long.note ?? '', /prompt of 60 tokens/);
});

/**
 * A stand-in model that deterministically spells `script` (as byte tokens) after any prompt,
 * and rejects going past max_position_embeddings like the real one.
 */
function scriptedModel(script: string, maxPos = 1024): MoETransformerLM {
  const bytes = Array.from(new TextEncoder().encode(script));
  let start = 0;
  const config = parseModelConfig({ ...TINY, num_local_experts: 0, max_position_embeddings: maxPos });
  const stub = {
    config,
    training: false,
    eval() {
      this.training = false;
      return this;
    },
    train(on = true) {
      this.training = on;
      return this;
    },
    emptyCache(): KVCache {
      return { k: [], v: [], length: 0 };
    },
    forward(ids: Int32Array, _B: number, T: number, opts: { cache?: KVCache }) {
      const cache = opts.cache!;
      if (cache.length === 0) start = T; // a fresh prefill: the script starts after the prompt
      if (cache.length + T > maxPos) throw new Error('stub: past max_position_embeddings');
      cache.length += T;
      const data = new Float32Array(T * 256).fill(-5);
      data[(T - 1) * 256 + bytes[(cache.length - start) % bytes.length]] = 5;
      return { logits: { data }, aux: [] };
    },
  };
  return stub as unknown as MoETransformerLM;
}

test('generate: streamed pieces never split a multibyte character and concatenate to the text', () => {
  const script = 'héllo wörld — 日本語 🙂 ';
  const pieces: string[] = [];
  const n = new TextEncoder().encode(script).length;
  const res = generate(scriptedModel(script), new ByteTokenizer(), '>', { maxNewTokens: n, temperature: 0, onText: (p) => pieces.push(p) });
  assert.equal(res.text, script);
  assert.equal(pieces.join(''), script);
  for (const p of pieces) assert.ok(!p.includes('\uFFFD'), `piece ${JSON.stringify(p)} holds a split character`);
  assert.ok(pieces.includes('日') && pieces.includes('🙂'), 'multibyte characters arrive whole');
  // cut inside a character: the trailing partial bytes decode to U+FFFD only at the end
  const cut = generate(scriptedModel(script), new ByteTokenizer(), '>', { maxNewTokens: 2 + 1, temperature: 0 });
  assert.equal(cut.text, 'h\u00e9');
  const cut2 = generate(scriptedModel('日'), new ByteTokenizer(), '>', { maxNewTokens: 2, temperature: 0 });
  assert.equal(cut2.text, '\uFFFD');
});

test('generate: stopOnText ends before the stop string and never streams any of it', () => {
  const script = 'one fish, two fish. red fish, blue fish. ';
  for (const stop of ['. ', 'two', 'fish. red', 'sh, b']) {
    const pieces: string[] = [];
    const res = generate(scriptedModel(script), new ByteTokenizer(), '#', { maxNewTokens: 200, temperature: 0, stopOnText: stop, onText: (p) => pieces.push(p) });
    const expected = script.slice(0, script.indexOf(stop));
    assert.equal(res.text, expected, `stop ${JSON.stringify(stop)}`);
    assert.equal(pieces.join(''), expected, `streamed text for stop ${JSON.stringify(stop)}`);
    assert.equal(res.stopReason, 'stop_text');
    assert.equal(res.ids.length, script.indexOf(stop) + stop.length, 'ids include the stop string tokens');
  }
  // a stop string that appears only partially is released at the end
  const pieces: string[] = [];
  const res = generate(scriptedModel('abcab'), new ByteTokenizer(), '#', { maxNewTokens: 5, temperature: 0, stopOnText: 'abd', onText: (p) => pieces.push(p) });
  assert.equal(res.text, 'abcab');
  assert.equal(pieces.join(''), 'abcab');
  assert.equal(res.stopReason, 'max_new_tokens');
});

test('generate: the scripted model never sees a position past the limit when sliding', () => {
  const res = generate(scriptedModel('0123456789', 16), new ByteTokenizer(), 'prompt', { maxNewTokens: 50, temperature: 0, contextOverflow: 'slide' });
  assert.equal(res.ids.length, 50);
  assert.ok(res.slides > 0);
});

function writeCheckpoint(runDir: string, model: MoETransformerLM, modelCfg: Record<string, unknown>, tok: Tokenizer): string {
  const config = parseRunConfig({ model: modelCfg });
  return saveCheckpoint(runDir, {
    state: {
      format: CHECKPOINT_FORMAT,
      version: CHECKPOINT_VERSION,
      step: 3,
      config,
      tokenizer: tok.toJSON(),
      optimizerStep: 3,
      dataState: { rng: [1, 2, 3, 4], step: 0 },
      rngState: [1, 2, 3, 4],
    },
    model: model.stateDict(),
    optimizer: { step: 3, m: [], v: [] },
  });
}

test('loadModelForInference: a saved model generates the same text; bad paths and mismatches fail clearly', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'moe-infer-'));
  try {
    const cfg = CONFIGS['moe topk E=4 k=2'];
    const model = makeModel(cfg, 21);
    const tok = new ByteTokenizer();
    writeCheckpoint(dir, model, cfg, tok);
    const loaded = loadModelForInference(dir);
    assert.equal(loaded.step, 3);
    assert.equal(loaded.model.training, false);
    assert.equal(loaded.config.model.num_local_experts, 4);
    const opts = { maxNewTokens: 12, temperature: 0.8, topK: 40, topP: 0.9, seed: 4 };
    assert.equal(generate(loaded.model, loaded.tokenizer, 'Once', opts).text, generate(model, tok, 'Once', opts).text);

    assert.throws(() => loadModelForInference(path.join(dir, 'nope')), /checkpoint not found/);
    // weights from another architecture under this config
    const other = path.join(dir, 'other');
    const bigger: ModelConfig = parseModelConfig({ ...cfg, hidden_size: 32 });
    writeCheckpoint(other, new MoETransformerLM(bigger, 1), cfg, tok);
    assert.throws(() => loadModelForInference(other), /model\.safetensors does not match its config: loadStateDict/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
