import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { tmpDir } from '../train/helpers.js';

const cli = path.join(path.dirname(fileURLToPath(import.meta.url)), '../../src/cli/main.js');

function run(args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', env: { ...process.env, MOE_BACKEND: 'js' }, timeout: 120_000 });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

const tiny = {
  model: { hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2, max_position_embeddings: 32, num_local_experts: 4, num_experts_per_tok: 2, moe_intermediate_size: 32 },
  training: { steps: 4, batch_size: 2, seq_len: 16, warmup_steps: 1, eval_interval: 2, eval_batches: 1, save_interval: 2 },
};

test('train, resume, generate and eval through the CLI', () => {
  const dir = tmpDir('cli');
  const cfgPath = path.join(dir, 'cfg.json');
  fs.writeFileSync(cfgPath, JSON.stringify(tiny));
  const out = path.join(dir, 'run');
  const t = run(['train', '--config', cfgPath, '--steps', '2', '--out', out]);
  assert.equal(t.code, 0, t.stderr);
  assert.match(t.stdout, /done: 2 steps, val loss [\d.]+/);
  const r = run(['train', '--config', cfgPath, '--out', out, '--resume']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /resuming at step 2/);
  assert.match(r.stdout, /done: 4 steps/);
  const g = run(['generate', '--ckpt', out, '--prompt', 'ROMEO:', '--max-tokens', '10', '--seed', '3']);
  assert.equal(g.code, 0, g.stderr);
  assert.ok(g.stdout.startsWith('ROMEO:'));
  const g2 = run(['generate', '--ckpt', out, '--prompt', 'ROMEO:', '--max-tokens', '10', '--seed', '3']);
  assert.equal(g2.stdout, g.stdout, 'same seed, same text');
  const e = run(['eval', '--ckpt', out, '--json']);
  assert.equal(e.code, 0, e.stderr);
  const rep = JSON.parse(e.stdout);
  assert.equal(rep.step, 4);
  assert.equal(rep.domains[0].domain, 'shakespeare');
  assert.ok(rep.loss > 0 && rep.expertUsage.length === 1);
});

test('bad input gives one clear line and a non-zero exit code', () => {
  const dir = tmpDir('clibad');
  const cases: [string[], RegExp][] = [
    [['train', '--steps', 'abc'], /--steps must be an integer >= 1, got "abc"/],
    [['train', '--config', path.join(dir, 'missing.json')], /cannot read config .*missing\.json: ENOENT/],
    [['train', '--data', path.join(dir, 'nope.txt'), '--steps', '1', '--out', path.join(dir, 'o')], /corpus file not found: .*nope\.txt/],
    [['train', '--resume'], /--resume needs --out/],
    [['train', '--backend', 'cuda', '--steps', '1'], /unknown backend "cuda"/],
    [['generate', '--ckpt', path.join(dir, 'nothing')], /checkpoint not found/],
    [['generate', '--ckpt', dir, '--temperature', '-1'], /--temperature must be >= 0/],
    [['generate', '--ckpt', dir, '--top-p', '2'], /--top-p must be in \(0, 1\]/],
    [['generate', '--ckpt', dir, '--top-k', '1.5'], /--top-k must be an integer >= 0/],
    [['generate', '--ckpt', dir, '--max-tokens', '0'], /--max-tokens must be an integer >= 1/],
    [['train', '--threads', '0'], /--threads must be an integer >= 1/],
    [['eval', '--ckpt', dir, '--batches', 'x'], /--batches must be an integer >= 1/],
    [['bench-routers', '--routers', 'topk,nope', '--quick', '--out', path.join(dir, 'br')], /unknown router "nope"/],
    [['frobnicate'], /unknown command 'frobnicate'/],
  ];
  fs.writeFileSync(path.join(dir, 'bad.json'), '{"model": {"num_local_experts": "many"}}');
  cases.push([['train', '--config', path.join(dir, 'bad.json')], /model\.num_local_experts/]);
  for (const [args, re] of cases) {
    const r = run(args);
    assert.notEqual(r.code, 0, `${args.join(' ')} should fail`);
    assert.match(r.stderr, re, `${args.join(' ')}: ${r.stderr}`);
    assert.ok(!/\n\s+at /.test(r.stderr), `no stack trace for ${args.join(' ')}`);
  }
});
