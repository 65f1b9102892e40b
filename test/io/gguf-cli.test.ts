/**
 * Issue 12's "done when", through the CLI: `moe-ts train`, then `moe-ts convert RUN --to gguf
 * --quant q8_0`, and llama.cpp's greedy text from that file equals `moe-ts generate --model
 * file.gguf` (the same file); `moe-ts chat --model file.gguf` answers as a ChatSession on it.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { getLlama, LlamaLogLevel, type Llama, type Token } from 'node-llama-cpp';
import { tmpDir } from '../train/helpers.js';
import { ChatSession } from '../../src/infer/index.js';
import { fromGGUF } from '../../src/io/gguf/index.js';

const cli = path.join(path.dirname(fileURLToPath(import.meta.url)), '../../src/cli/main.js');

function run(args: string[], input = ''): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [cli, ...args], { input, encoding: 'utf8', env: { ...process.env, MOE_BACKEND: 'js' }, timeout: 300_000 });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

let llama: Llama | null = null;
after(async () => {
  await llama?.dispose();
});

test('train -> convert --to gguf --quant q8_0 -> llama.cpp greedy text == moe-ts generate --model file.gguf; eval and chat --model file.gguf', async () => {
  const dir = tmpDir('gguf-cli');
  const cfg = {
    model: { hidden_size: 64, num_hidden_layers: 2, num_attention_heads: 2, max_position_embeddings: 128, num_local_experts: 4, num_experts_per_tok: 2, moe_intermediate_size: 64 },
    training: { steps: 30, batch_size: 4, seq_len: 32, warmup_steps: 2, eval_interval: 30, eval_batches: 1, save_interval: 30 },
  };
  const cfgPath = path.join(dir, 'cfg.json');
  fs.writeFileSync(cfgPath, JSON.stringify(cfg));
  const runDir = path.join(dir, 'run');
  const t = run(['train', '--config', cfgPath, '--out', runDir, '--quiet']);
  assert.equal(t.code, 0, t.stderr);
  const file = path.join(dir, 'model.gguf');
  const c = run(['convert', runDir, file, '--to', 'gguf', '--quant', 'q8_0']);
  assert.equal(c.code, 0, c.stderr);
  assert.match(c.stdout, /wrote .*model\.gguf: llama, q8_0/);

  const prompt = 'ROMEO:';
  const g = run(['generate', '--model', file, '--prompt', prompt, '--max-tokens', '32', '--temperature', '0', '--json']);
  assert.equal(g.code, 0, g.stderr);
  const ours = JSON.parse(g.stdout) as { text: string; ids: number[] };
  assert.equal(ours.ids.length, 32);

  llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
  const m = await llama.loadModel({ modelPath: file });
  try {
    const ctx = await m.createContext({ contextSize: 128, threads: 1 });
    const { tokenizer } = fromGGUF(file);
    const got: number[] = [];
    for await (const tok of ctx.getSequence().evaluate(Array.from(tokenizer.encode(prompt)) as unknown as Token[], { temperature: 0 })) {
      got.push(tok as unknown as number);
      if (got.length === 32) break;
    }
    await ctx.dispose();
    assert.deepEqual(got, ours.ids, 'llama.cpp and moe-ts generate pick different greedy tokens from the same q8_0 file');
    assert.equal(tokenizer.decode(Int32Array.from(got)), ours.text);
    assert.equal(m.detokenize(got as unknown as Token[]), ours.text, "llama.cpp's detokenised text");
  } finally {
    await m.dispose();
  }

  // eval --model file.gguf: the loss of the run's checkpoint up to q8_0 rounding
  const evalJson = (args: string[]): { loss: number } => {
    const r = run(['eval', ...args, '--data', 'shakespeare', '--batches', '2', '--json']);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as { loss: number };
  };
  const lossGguf = evalJson(['--model', file]).loss;
  const lossRun = evalJson(['--ckpt', runDir]).loss;
  assert.ok(Number.isFinite(lossGguf) && Math.abs(lossGguf - lossRun) < 0.02 * lossRun, `eval loss of the q8_0 file ${lossGguf} vs the run ${lossRun}`);

  // chat --model file.gguf: the replies of a ChatSession on the same file
  const ch = run(['chat', '--model', file, '--max-tokens', '10', '--temperature', '0'], 'hello\nwho are you\n');
  assert.equal(ch.code, 0, ch.stderr);
  const g2 = fromGGUF(file);
  const s = new ChatSession(g2.model, g2.tokenizer, { maxNewTokens: 10, temperature: 0 });
  assert.equal(ch.stdout, `${s.send('hello').text}\n${s.send('who are you').text}\n`);
});
