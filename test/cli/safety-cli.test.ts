// Issue 8 through the command line: cases 2, 3 (resume, Ctrl-C), 7 (non-finite weights), 8 (threads), 10 (FIFO/devices).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { tmpDir } from '../train/helpers.js';
import { readSafetensorsSync, writeSafetensorsSync } from '../../src/io/safetensors.js';
import { resolveCheckpointDir } from '../../src/io/checkpoint.js';
import { createBackend } from '../../src/kernels/index.js';

const cli = path.join(path.dirname(fileURLToPath(import.meta.url)), '../../src/cli/main.js');
const env = { ...process.env, MOE_BACKEND: 'js' };

function run(args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', env, timeout: 120_000 });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

const tiny = {
  model: { hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, max_position_embeddings: 32, num_local_experts: 2, num_experts_per_tok: 1, moe_intermediate_size: 16 },
  training: { batch_size: 2, seq_len: 8, warmup_steps: 1, eval_interval: 1000, eval_batches: 1, save_interval: 1000 },
};

function oneLine(r: { stderr: string }): void {
  assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
}

test('existing runs are refused or replaced; resume keeps the run config and data and lists overrides', () => {
  const dir = tmpDir('cli-safety');
  const cfg = path.join(dir, 'cfg.json');
  fs.writeFileSync(cfg, JSON.stringify(tiny));
  const a = path.join(dir, 'a.txt');
  const b = path.join(dir, 'b.txt');
  fs.writeFileSync(a, 'the quick brown fox jumps over the lazy dog. '.repeat(30));
  fs.writeFileSync(b, 'int main(void) { return 0; }\n'.repeat(40));
  const out = path.join(dir, 'run');
  const t = run(['train', '--config', cfg, '--steps', '3', '--data', a, b, '--out', out, '--quiet']);
  assert.equal(t.code, 0, t.stderr);
  const again = run(['train', '--config', cfg, '--steps', '2', '--out', out, '--quiet']);
  assert.notEqual(again.code, 0);
  assert.match(again.stderr, /already holds a run .*Continue it with --resume, or replace it with --overwrite/);
  oneLine(again);
  // the finished 3-step run: resume without --steps has nothing to do; with --steps it extends, on both domains
  const fin = run(['train', '--out', out, '--resume']);
  assert.notEqual(fin.code, 0);
  assert.match(fin.stderr, /already at step 3 of 3; to train longer, resume with --steps N/);
  oneLine(fin);
  const ext = run(['train', '--out', out, '--resume', '--steps', '5']);
  assert.equal(ext.code, 0, ext.stderr);
  assert.match(ext.stderr, /data a \+ b/);
  assert.match(ext.stderr, /resuming at step 3 of 5/);
  assert.match(ext.stderr, /override training\.steps: 3 -> 5/);
  assert.match(ext.stdout, /done: 5 steps/);
  const model = run(['train', '--out', out, '--resume', '--steps', '6', '--dense']);
  assert.match(model.stderr, /different model config/);
  const both = run(['train', '--out', out, '--resume', '--overwrite']);
  assert.match(both.stderr, /choose one/);
  const ow = run(['train', '--config', cfg, '--steps', '1', '--out', out, '--overwrite', '--quiet']);
  assert.equal(ow.code, 0, ow.stderr);
  assert.match(ow.stdout, /done: 1 steps/);
});

test('Ctrl-C saves a checkpoint, prints how to resume, exits 130; the run resumes', async () => {
  const dir = tmpDir('cli-sigint');
  const cfg = path.join(dir, 'cfg.json');
  fs.writeFileSync(cfg, JSON.stringify(tiny));
  const out = path.join(dir, 'run');
  const child = spawn(process.execPath, [cli, 'train', '--config', cfg, '--steps', '2000', '--out', out], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  const started = new Promise<void>((resolve) => {
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      if (/step \d+\/2000/.test(stderr)) resolve();
    });
  });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  // without a TTY progress prints every steps/20 = 100 steps; a loaded machine may take a while to get there
  const deadline = setTimeout(() => child.kill('SIGKILL'), 150_000);
  // a child that dies (or is killed by the deadline) before printing progress fails the assertions below, not the event loop
  await Promise.race([started, exited]);
  child.kill('SIGINT');
  const code = await exited;
  clearTimeout(deadline);
  assert.equal(code, 130, stderr);
  const m = /interrupted at step (\d+) of 2000; checkpoint saved in .*run\. Continue with: moe-ts train --out .*run --resume/.exec(stderr);
  assert.ok(m, stderr);
  const latest = JSON.parse(fs.readFileSync(path.join(out, 'latest.json'), 'utf8'));
  assert.equal(latest.step, Number(m[1]));
  const r = run(['train', '--out', out, '--resume', '--steps', String(latest.step + 2), '--quiet']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, new RegExp(`done: ${latest.step + 2} steps`));
});

test('non-finite weights: eval and generate refuse with the cause; --allow-non-finite loads anyway', () => {
  const dir = tmpDir('cli-nan');
  const cfg = path.join(dir, 'cfg.json');
  fs.writeFileSync(cfg, JSON.stringify(tiny));
  const out = path.join(dir, 'run');
  assert.equal(run(['train', '--config', cfg, '--steps', '1', '--out', out, '--quiet']).code, 0);
  const file = path.join(resolveCheckpointDir(out), 'model.safetensors');
  const f = readSafetensorsSync(file);
  const [name, t] = [...f.tensors].find(([n]) => n.includes('norm'))!;
  (t.data as Float32Array)[1] = NaN;
  writeSafetensorsSync(file, f.tensors, f.metadata);
  for (const cmd of [
    ['eval', '--ckpt', out],
    ['generate', '--ckpt', out, '--max-tokens', '3'],
  ]) {
    const r = run(cmd);
    assert.notEqual(r.code, 0, cmd[0]);
    assert.match(r.stderr, new RegExp(`tensor "${name.replace(/\./g, '\\.')}" holds 1 non-finite value \\(first: NaN at index 1\\).*--allow-non-finite`), cmd[0]);
    oneLine(r);
  }
  const dbg = run(['eval', '--ckpt', out, '--allow-non-finite', '--json']);
  assert.equal(dbg.code, 0, dbg.stderr);
});

test('--threads is bounded for every backend; FIFOs and devices as config or data fail clearly', async () => {
  const r = run(['train', '--backend', 'native', '--threads', '100000', '--steps', '1']);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /--threads must be at most 256, got "100000"/);
  await assert.rejects(createBackend('native', { threads: 100000 }), /threads must be an integer in \[1, 256\], got 100000/);
  await assert.rejects(createBackend('wasm', { threads: 100000 }), /threads must be an integer in \[1, 256\]/);
  if (process.platform === 'win32') return;
  const dir = tmpDir('cli-fifo');
  const fifo = path.join(dir, 'pipe');
  execFileSync('mkfifo', [fifo]);
  for (const [args, re] of [
    [['train', '--config', fifo, '--steps', '1'], /config .*pipe is a FIFO \(named pipe\), expected a regular file/],
    [['train', '--config', '/dev/zero', '--steps', '1'], /config \/dev\/zero is a character device/],
    [['train', '--data', fifo, '--steps', '1', '--out', path.join(dir, 'o1')], /corpus file .*pipe is a FIFO/],
    [['train', '--data', '/dev/zero', '--steps', '1', '--out', path.join(dir, 'o2')], /corpus file \/dev\/zero is a character device/],
    [['bench-routers', '--config', fifo, '--out', path.join(dir, 'b1')], /config .*pipe is a FIFO \(named pipe\), expected a regular file/],
    [['bench-routers', '--config', '/dev/zero', '--out', path.join(dir, 'b2')], /config \/dev\/zero is a character device/],
  ] as const) {
    const x = run([...args]);
    assert.notEqual(x.code, 0, args.join(' '));
    assert.match(x.stderr, re, args.join(' '));
    oneLine(x);
  }
});
