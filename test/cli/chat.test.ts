// `moe-ts chat` driven through stdin: its replies equal a ChatSession run in-process with the same
// checkpoint and options, the history grows turn by turn, /reset forgets it, bad flags fail in one line.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { tmpDir } from '../train/helpers.js';
import { ChatSession, loadModelForInference } from '../../src/infer/index.js';

const cli = path.join(path.dirname(fileURLToPath(import.meta.url)), '../../src/cli/main.js');

function run(args: string[], input = ''): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [cli, ...args], { input, encoding: 'utf8', env: { ...process.env, MOE_BACKEND: 'js' }, timeout: 120_000 });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

const tiny = {
  model: { hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2, max_position_embeddings: 128, num_local_experts: 4, num_experts_per_tok: 2, moe_intermediate_size: 32 },
  training: { steps: 2, batch_size: 2, seq_len: 16, warmup_steps: 1, eval_interval: 2, eval_batches: 1, save_interval: 2 },
};

test('chat through stdin: streamed replies match ChatSession, multi-turn history, /reset', () => {
  const dir = tmpDir('chat');
  const cfgPath = path.join(dir, 'cfg.json');
  fs.writeFileSync(cfgPath, JSON.stringify(tiny));
  const out = path.join(dir, 'run');
  const t = run(['train', '--config', cfgPath, '--out', out, '--quiet']);
  assert.equal(t.code, 0, t.stderr);

  const args = ['chat', '--ckpt', out, '--system', 'be brief', '--max-tokens', '12', '--temperature', '0.7', '--seed', '5'];
  const c = run(args, 'hello\n\nhow are you\n/reset\nx\n/exit\nnever read\n');
  assert.equal(c.code, 0, c.stderr);

  const { model, tokenizer } = loadModelForInference(out);
  const s = new ChatSession(model, tokenizer, { maxNewTokens: 12, temperature: 0.7, seed: 5, system: 'be brief' });
  const r1 = s.send('hello');
  const r2 = s.send('how are you');
  s.reset(); // forgets the conversation; the seed keeps advancing (reply n uses seed + n)
  const r3 = s.send('x');
  assert.equal(c.stdout, `${r1.text}\n${r2.text}\n${r3.text}\n`);

  // byte tokenizer: prompt tokens are the UTF-8 bytes of the rendered default template
  const p1 = '<|system|>\nbe brief\n<|user|>\nhello\n<|assistant|>\n';
  assert.equal(r1.prompt, p1);
  assert.equal(r2.prompt, `${p1}${r1.text}\n<|user|>\nhow are you\n<|assistant|>\n`);
  const turns = [...c.stderr.matchAll(/\[turn (\d+): prompt (\d+) tokens, reply (\d+) tokens \((\w+)\)/g)].map((m) => [Number(m[1]), Number(m[2]), Number(m[3])]);
  assert.deepEqual(turns, [
    [1, Buffer.byteLength(p1), r1.ids.length],
    [2, r2.promptTokens, r2.ids.length],
    [1, Buffer.byteLength('<|system|>\nbe brief\n<|user|>\nx\n<|assistant|>\n'), r3.ids.length],
  ]);
  assert.match(c.stderr, /\[conversation reset\]/);
  assert.ok(r2.promptTokens > Buffer.byteLength(p1) + 20);

  // the same seed gives the same conversation
  assert.equal(run(args, 'hello\nhow are you\n').stdout, `${r1.text}\n${r2.text}\n`);

  const tplPath = path.join(dir, 'tpl.jinja');
  fs.writeFileSync(tplPath, "{% for m in messages %}{{ m['role'][0] }}: {{ m['content'] }}\n{% endfor %}a: ");
  const tc = run(['chat', '--ckpt', out, '--template', tplPath, '--max-tokens', '3', '--temperature', '0'], 'hi\n');
  assert.equal(tc.code, 0, tc.stderr);
  assert.match(tc.stderr, new RegExp(`\\[turn 1: prompt ${Buffer.byteLength('u: hi\na: ')} tokens, reply 3 tokens`));

  const bad: [string[], RegExp][] = [
    [['chat'], /--model <path> \(or --ckpt <dir>\) is required/],
    [['chat', '--ckpt', out, '--template', path.join(dir, 'none.jinja')], /--template .*none\.jinja: cannot read: ENOENT/],
    [['chat', '--ckpt', out, '--top-p', '0'], /--top-p must be in \(0, 1\]/],
    [['chat', '--ckpt', path.join(dir, 'nothing')], /checkpoint not found/],
  ];
  for (const [a, re] of bad) {
    const r = run(a, 'hi\n');
    assert.notEqual(r.code, 0, a.join(' '));
    assert.match(r.stderr, re);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  }
  fs.writeFileSync(tplPath, '{% for m in messages %}');
  const pe = run(['chat', '--ckpt', out, '--template', tplPath], 'hi\n');
  assert.match(pe.stderr, /chat template: cannot parse/);
});
