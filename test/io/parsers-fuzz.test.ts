/**
 * Seeded mutation fuzzing of the JSON parsers a user's files reach (issue 8): run configs, moe-ts
 * tokenizer files (byte, BPE), Hugging Face tokenizer.json/tokenizer_config.json, and a
 * checkpoint's state.json. Each mutated document must either load (and then work on a sample
 * text / pass the memory check) or fail with one clear line: never an internal TypeError or
 * RangeError, a multi-line trace, a hang or a huge allocation. Bounded: a fixed number of cases.
 * (safetensors and GGUF have their own byte-level fuzzers: safetensors-reader, gguf-fuzz.)
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Rng } from '../../src/tensor/random.js';
import { parseRunConfigText } from '../../src/models/config.js';
import { checkMemory, checkRunMemory } from '../../src/models/memory.js';
import { ByteTokenizer, BpeTokenizer, loadTokenizerFile, type Tokenizer } from '../../src/data/tokenizer/index.js';
import { loadHfTokenizerFiles } from '../../src/io/hf-tokenizer.js';
import { loadCheckpoint } from '../../src/io/checkpoint.js';
import { inferenceModelFromCheckpoint } from '../../src/infer/generate.js';
import { train } from '../../src/train/trainer.js';
import { mutateJson, isCleanError } from '../helpers/json-mutate.js';
import { tinyConfig, tmpDir } from '../train/helpers.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const TOK = path.resolve(here, '..', '..', '..', 'test', 'fixtures', 'tokenizers');
const SAMPLE = 'Hello world, é 🙂\n  1 2 <s> </s>';
/** A model or run that fits here is small enough to build in a test. */
const BUDGET = 256 * 1024 * 1024;

function clean(e: unknown, what: string): void {
  const why = isCleanError(e);
  assert.equal(why, null, `${what}: ${why}`);
}

/** Use a tokenizer that loaded: encode and decode must work or fail cleanly. */
function exercise(tok: Tokenizer, what: string): void {
  try {
    const ids = tok.encode(SAMPLE, { addSpecialTokens: true });
    assert.ok(
      ids.every((id) => id >= 0 && id < tok.vocabSize),
      `${what}: id outside the vocabulary`,
    );
    tok.decode(ids);
  } catch (e) {
    if (e instanceof assert.AssertionError) throw e;
    clean(e, `${what} (using it)`);
  }
}

/** Run `cases` mutations of `base` through `load`; returns how many loaded. */
function fuzz(seed: number, cases: number, base: string, load: (text: string, what: string) => void): number {
  const rng = new Rng(seed);
  let loaded = 0;
  for (let i = 0; i < cases; i++) {
    const what = `seed ${seed} case ${i}`;
    const text = mutateJson(rng, base);
    try {
      load(text, what);
      loaded++;
    } catch (e) {
      if (e instanceof assert.AssertionError) throw e;
      clean(e, what);
    }
  }
  return loaded;
}

const dir = tmpDir('parsers-fuzz');

test('mutated run configs parse or fail with one line naming the field (300 cases)', { timeout: 60_000 }, () => {
  const base = JSON.stringify(tinyConfig());
  const file = path.join(dir, 'config.json');
  const loaded = fuzz(1, 300, base, (text) => {
    const cfg = parseRunConfigText(text, file);
    checkRunMemory(cfg, BUDGET);
  });
  assert.ok(loaded > 0 && loaded < 300, `loaded ${loaded} of 300: the mutations must both pass and fail`);
});

test('mutated moe-ts tokenizer files (byte, BPE with its pattern) load or fail with one line (2 x 200 cases)', { timeout: 60_000 }, () => {
  const bpe = BpeTokenizer.train('the cat sat on the mat; the hat sat on the cat. '.repeat(20), { vocabSize: 280 });
  const file = path.join(dir, 'tokenizer.json');
  for (const [seed, tok] of [
    [2, new ByteTokenizer()],
    [3, bpe],
  ] as const) {
    let loaded = 0;
    fuzz(seed, 200, JSON.stringify(tok.toJSON()), (text, what) => {
      fs.writeFileSync(file, text);
      const t = loadTokenizerFile(file);
      loaded++;
      exercise(t, what);
    });
    assert.ok(loaded < 200, `${tok.name}: some mutations must be refused`);
  }
});

test('mutated Hugging Face tokenizer.json / tokenizer_config.json load or fail with one line naming the file (3 x 80 cases)', { timeout: 120_000 }, () => {
  let seed = 10;
  for (const fix of ['spm-legacy', 'bytelevel-chatml', 'spm-metaspace']) {
    const d = path.join(dir, `hf-${fix}`);
    fs.mkdirSync(d, { recursive: true });
    const tj = fs.readFileSync(path.join(TOK, fix, 'tokenizer.json'), 'utf8');
    const tc = fs.readFileSync(path.join(TOK, fix, 'tokenizer_config.json'), 'utf8');
    for (const [which, base, other] of [
      ['tokenizer.json', tj, tc],
      ['tokenizer_config.json', tc, tj],
    ] as const) {
      let failed = 0;
      fuzz(seed++, 40, base, (text, what) => {
        fs.writeFileSync(path.join(d, which), text);
        fs.writeFileSync(path.join(d, which === 'tokenizer.json' ? 'tokenizer_config.json' : 'tokenizer.json'), other);
        let t: Tokenizer;
        try {
          t = loadHfTokenizerFiles(d);
        } catch (e) {
          failed++;
          clean(e, what);
          assert.ok((e as Error).message.includes(d), `${what}: the error names no file: ${(e as Error).message}`);
          return;
        }
        exercise(t, `${fix} ${what}`);
      });
      assert.ok(failed > 0, `${fix} ${which}: some mutations must be refused`);
    }
  }
});

test('mutated checkpoint state.json files load or fail with one line naming the file (200 cases)', { timeout: 120_000 }, async () => {
  const run = path.join(dir, 'run');
  await train({ config: tinyConfig({ training: { steps: 1, eval_interval: 1, save_interval: 1 } }), outDir: run });
  const ck = loadCheckpoint(run, false).dir;
  const stateFile = path.join(ck, 'state.json');
  const base = fs.readFileSync(stateFile, 'utf8');
  let loaded = 0;
  try {
    fuzz(20, 200, base, (text, what) => {
      fs.writeFileSync(stateFile, text);
      const c = loadCheckpoint(ck, false);
      loaded++;
      // only build what is small: the memory check itself must answer cleanly
      checkMemory(c.state.config.model, { available: BUDGET });
      const m = inferenceModelFromCheckpoint(c, ck);
      exercise(m.tokenizer, what);
    });
  } finally {
    fs.writeFileSync(stateFile, base);
  }
  assert.ok(loaded > 0 && loaded < 200, `loaded ${loaded} of 200`);
});
