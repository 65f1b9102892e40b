// moe-ts analyze: each metric on a constructed model (identical experts have similarity 1, a
// scaled expert a scaled output norm, an expert never routed contributes nothing and steers
// nothing, forbidding the only routed expert equals swapping in the next one), the page in
// headless Chromium, and the CLI (analyze, generate/eval with --force/--forbid-expert, --contrast).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { MoETransformerLM } from '../../src/models/transformer.js';
import { ByteTokenizer } from '../../src/data/tokenizer/index.js';
import { buildDataset } from '../../src/data/build.js';
import { loadCorpusSplits } from '../../src/data/corpus.js';
import { evaluate } from '../../src/train/evaluate.js';
import { train } from '../../src/train/trainer.js';
import { analyzeExperts, cosineMatrix, expertWeightVectors, normalizedMutualInformation, steerEffects } from '../../src/adapt/analyze.js';
import { analyzeCommand } from '../../src/cli/analyze-command.js';
import { tinyConfig, tmpDir } from '../train/helpers.js';
import type { Parameter } from '../../src/nn/module.js';

const cfg = tinyConfig({ model: { num_experts_per_tok: 1 }, training: { eval_batches: 1 }, data: { sources: ['shakespeare', 'linux'] } });
const tok = new ByteTokenizer();
const data = buildDataset(cfg, tok, [loadCorpusSplits('shakespeare'), loadCorpusSplits('linux')]);

/** A model whose first MoE layer routes every token to expert 0 (zero gate: all logits tie, ties go to the lower index). */
function constructed(seed = 1): MoETransformerLM {
  const m = new MoETransformerLM(cfg.model, seed).eval();
  m.layers[0].block_sparse_moe!.router.namedParameters().forEach(([, p]) => p.data.fill(0));
  return m;
}
const expertParams = (m: MoETransformerLM, layer: number) =>
  m.layers[layer]
    .block_sparse_moe!.experts.namedParameters()
    .filter(([, p]) => p.shape[0] === 4)
    .map(([, p]) => p) as Parameter[];
/** Copy expert `from` onto expert `to` (sign -1: its negation) in one layer. */
function copyExpert(m: MoETransformerLM, layer: number, from: number, to: number, sign = 1): void {
  for (const p of expertParams(m, layer)) {
    const n = p.size / 4;
    for (let i = 0; i < n; i++) p.data[to * n + i] = sign * p.data[from * n + i];
  }
}

test('similarity: identical experts 1, negated -1, the matrix symmetric with a unit diagonal', () => {
  const m = constructed();
  copyExpert(m, 1, 1, 0);
  copyExpert(m, 1, 3, 2, -1);
  const s = cosineMatrix(expertWeightVectors(m.layers[1].block_sparse_moe!.experts));
  assert.ok(Math.abs(s[0][1] - 1) < 1e-9, `${s[0][1]}`);
  assert.ok(Math.abs(s[2][3] + 1) < 1e-9, `${s[2][3]}`);
  for (let i = 0; i < 4; i++) {
    assert.ok(Math.abs(s[i][i] - 1) < 1e-9);
    for (let j = 0; j < 4; j++) assert.equal(s[i][j], s[j][i]);
  }
  assert.ok(Math.abs(s[0][2]) < 0.5, 'independent random experts are far from parallel');
});

test('routing agreement: NMI is 1 for a relabelling, 0 for independent or constant choices', () => {
  const a = [0, 1, 2, 3, 0, 1, 2, 3];
  assert.ok(Math.abs(normalizedMutualInformation(a, a) - 1) < 1e-12);
  assert.ok(Math.abs(normalizedMutualInformation(a, [3, 2, 1, 0, 3, 2, 1, 0]) - 1) < 1e-12);
  assert.equal(normalizedMutualInformation([0, 0, 1, 1], [0, 1, 0, 1]), 0);
  assert.equal(normalizedMutualInformation(a, new Array(8).fill(2)), 0);
  assert.throws(() => normalizedMutualInformation([0], [0, 1]), /1 labels vs 2/);
});

test('analyzeExperts on a constructed model: usage, output norms, ablation, steering and traces', () => {
  const m = constructed(2);
  const base = analyzeExperts(m, tok, data, { batches: 1, prompts: ['To be', 'int x;'], traceTokens: 6 });
  assert.deepEqual(base.layers, [0, 1]);
  // layer 0: every token on expert 0
  for (const u of base.usage[0]) assert.deepEqual(u, [1, 0, 0, 0]);
  assert.ok(Number.isNaN(base.outputNorms[0].routed[1]), 'an expert no token reached has no routed norm');
  assert.ok(base.outputNorms[0].routed[0] > 0);
  // an expert never routed contributes exactly nothing; forbidding expert 0 = expert 1 in its place
  assert.deepEqual(base.ablation![0].slice(1), [0, 0, 0]);
  const swapped = constructed(2);
  copyExpert(swapped, 0, 1, 0);
  const swappedLoss = evaluate(swapped, data, { maxBatches: 1 }).loss;
  assert.ok(Math.abs(base.loss + base.ablation![0][0] - swappedLoss) < 1e-6, `${base.loss + base.ablation![0][0]} vs ${swappedLoss}`);
  assert.ok(
    base.ablation![1].some((d) => d !== 0),
    'layer 1 experts matter',
  );
  // steering: unrouted experts leave the distribution exactly as it was
  const st = base.steer!;
  assert.equal(st.length, 8);
  for (const e of [1, 2, 3]) {
    const r = st.find((s) => s.layer === 0 && s.expert === e)!;
    assert.equal(r.kl, 0);
    assert.equal(r.top1Changed, 0);
  }
  assert.ok(st.find((s) => s.layer === 0 && s.expert === 0)!.kl > 0);
  assert.ok(
    st.every((s, i) => i === 0 || st[i - 1].kl >= s.kl),
    'sorted by KL',
  );
  assert.deepEqual(steerEffects(m, tok, ['To be', 'int x;']), st);
  // output norms scale with the expert's output projection; routing (and so layer-0 usage) is unchanged
  const scaled = constructed(2);
  const l0 = scaled.layers[0].block_sparse_moe!.experts as unknown as { w2: Parameter };
  const n = l0.w2.size / 4;
  for (let i = 0; i < n; i++) l0.w2.data[i] *= 3;
  const s = analyzeExperts(scaled, tok, data, { batches: 1, ablation: false, traceTokens: 0 });
  assert.ok(Math.abs(s.outputNorms[0].routed[0] / base.outputNorms[0].routed[0] - 3) < 1e-4);
  assert.ok(Math.abs(s.outputNorms[0].all[0] / base.outputNorms[0].all[0] - 3) < 1e-4);
  assert.ok(Math.abs(s.outputNorms[0].all[1] - base.outputNorms[0].all[1]) < 1e-6);
  assert.equal(s.ablation, null);
  // the agreement diagonal is 1 (layer 0 is constant, so its NMI with anything is 0)
  assert.equal(base.agreement[0][1], 0);
  assert.ok(Math.abs(base.agreement[1][1] - 1) < 1e-9);
  assert.equal(base.traces.length, 2);
  assert.equal(base.traces[0].tokens.length, 6);
  assert.deepEqual(
    base.traces[0].tokens.map((t) => t.layers[0].experts),
    new Array(6).fill([0]),
  );
  const dense = new MoETransformerLM(tinyConfig({ model: { num_local_experts: 0 } }).model, 1);
  assert.throws(() => analyzeExperts(dense, tok, data), /analyze: the model has no MoE layers/);
});

test('analyze: routers without ranking logits get every metric but the ablation and steering, with a note saying why', () => {
  const h = new MoETransformerLM(tinyConfig({ model: { router_type: 'hash' } }).model, 1).eval();
  const a = analyzeExperts(h, tok, data, { batches: 1, prompts: ['To be'], traceTokens: 4 });
  assert.equal(a.ablation, null);
  assert.equal(a.steer, null);
  assert.equal(a.note, 'no ablation or steering table: router "hash" has no logits that rank experts (experts are a fixed hash of the token id)');
  assert.equal(a.usage.length, 2);
  assert.equal(a.similarity[0].length, 4);
  assert.equal(a.traces[0].tokens.length, 4);
});

const dir = tmpDir('analyze');
const run = path.join(dir, 'run');
const trained = train({ config: tinyConfig({ training: { steps: 2, eval_interval: 2, save_interval: 2, eval_batches: 1 }, data: { sources: ['shakespeare', 'linux'] } }), outDir: run });

test('analyze RUN: the page and the JSON; in headless Chromium every chart is drawn with no console errors', async (t) => {
  await trained;
  const r = analyzeCommand(run, { batches: 1, prompts: ['To be'], trace: 8, out: path.join(dir, 'a.html') });
  assert.equal(r.json, path.join(dir, 'a.json'));
  const j = JSON.parse(fs.readFileSync(r.json, 'utf8'));
  assert.deepEqual(j.layers, [0, 1]);
  assert.equal(j.traces[1].domain, 'linux');
  assert.equal(j.traces[1].tokens.length, 8);
  assert.equal(j.ablation.length, 2);
  const page = fs.readFileSync(r.html, 'utf8');
  const ids = ['similarity-0', 'similarity-1', 'norms-0', 'norms-1', 'agreement', 'same-top1', 'usage-0', 'usage-1', 'ablation', 'steer', 'domain-loss'];
  for (const id of ids) assert.ok(page.includes(`data-chart="${id}"`), id);
  assert.ok(!fs.readdirSync(dir).some((f) => f.endsWith('.tmp')));
  const { launchChromium } = await import('../helpers/chromium.js');
  const b = await launchChromium();
  if (!b) {
    t.skip('no Chromium (/usr/bin/chromium or CHROMIUM_PATH)');
    return;
  }
  try {
    const p = await b.ctx.newPage();
    const errors: string[] = [];
    p.on('console', (m) => {
      if (m.type() === 'error') errors.push(m.text());
    });
    p.on('pageerror', (e) => errors.push(e.message));
    await p.goto('file://' + r.html, { waitUntil: 'load' });
    const charts = await p.$$eval('figure.chart', (figs) =>
      figs.map((f) => {
        const svg = f.querySelector('svg');
        const box = svg?.getBoundingClientRect();
        const shapes = svg ? [...svg.querySelectorAll('path, rect')].filter((x) => x.tagName === 'rect' || (x.getAttribute('d') ?? '').length > 2) : [];
        return { id: f.getAttribute('data-chart'), w: box?.width ?? 0, h: box?.height ?? 0, shapes: shapes.length };
      }),
    );
    assert.deepEqual(
      charts.map((c) => c.id),
      ids,
    );
    for (const c of charts) {
      assert.ok(c.w > 50 && c.h > 50, `${c.id}: rendered size ${c.w}x${c.h}`);
      assert.ok(c.shapes > 0, `${c.id}: nothing drawn`);
    }
    assert.equal(await p.locator('table.steer tbody tr').count(), 8);
    assert.equal(await p.locator('table.trace tbody tr').count(), 8);
    const data = JSON.parse((await p.locator('#analysis-data').textContent()) ?? '{}');
    assert.deepEqual(data.layers, [0, 1]);
    assert.deepEqual(errors, []);
  } finally {
    await b.close();
  }
});

const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../src/cli/main.js');
function cli(args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...process.env, MOE_BACKEND: 'js', NO_COLOR: '1' }, timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('CLI: analyze, generate --forbid-expert/--force-expert/--contrast, eval --forbid-expert, one-line errors', async () => {
  await trained;
  const a = cli(['analyze', run, '--batches', '1', '--steer', '--prompt', 'To be', '--no-ablation']);
  assert.equal(a.code, 0, a.stderr);
  assert.match(a.stderr, /^analyze: .*analysis\.html and .*analysis\.json \(2 MoE layers x 4 experts, loss \d\.\d{4}; most steering: layer \d expert \d, KL/);
  assert.equal(JSON.parse(fs.readFileSync(path.join(run, 'analysis.json'), 'utf8')).ablation, null);
  const g = cli(['generate', '--ckpt', run, '--prompt', 'To', '--max-tokens', '6', '--show-routing', '--json', '--forbid-expert', '1:0', '--force-expert', '0:3']);
  assert.equal(g.code, 0, g.stderr);
  const o = JSON.parse(g.stdout);
  for (const tk of o.routing) {
    assert.ok(!tk.layers.find((l: { layer: number }) => l.layer === 1).experts.includes(0));
    assert.ok(tk.layers.find((l: { layer: number }) => l.layer === 0).experts.includes(3));
  }
  const c = cli(['generate', '--ckpt', run, '--prompt', 'To', '--max-tokens', '4', '--temperature', '0', '--contrast', '0.5,0.1', '--json']);
  assert.equal(c.code, 0, c.stderr);
  assert.equal(JSON.parse(c.stdout).ids.length, 4);
  const e0 = JSON.parse(cli(['eval', '--ckpt', run, '--batches', '1', '--json']).stdout);
  const e1 = cli(['eval', '--ckpt', run, '--batches', '1', '--forbid-expert', '0:0,1']);
  assert.equal(e1.code, 0, e1.stderr);
  assert.match(e1.stdout, /with forbid 0:0, forbid 0:1/);
  const loss = Number(/^all +(\d+\.\d+)/m.exec(e1.stdout)![1]);
  assert.notEqual(loss, +e0.loss.toFixed(4), 'forbidding half the experts changes the loss');
  const rr = cli(['eval', '--ckpt', run, '--batches', '1', '--data', 'linux', '--reroute', 'linux', '--reroute-k', '4']);
  assert.equal(rr.code, 0, rr.stderr);
  assert.match(rr.stdout, /re-routed toward linux \(\d+ correctly predicted reference tokens, k 4, lambda 0\.5\):/);
  assert.match(rr.stdout, /^linux +\d\.\d{4} +\d\.\d{4} +[+-]\d\.\d{4}$/m);
  const bad = cli(['generate', '--ckpt', run, '--forbid-expert', '0-1']);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /^moe-ts: --forbid-expert must be LAYER:EXPERT \(e\.g\. 0:3, or 0:3,5\), got "0-1"\n$/);
  const badLayer = cli(['eval', '--ckpt', run, '--forbid-expert', '9:0']);
  assert.equal(badLayer.code, 1);
  assert.match(badLayer.stderr, /^moe-ts: expert override: layer 9 must be a layer index in \[0, 2\)\n$/);
  assert.match(cli(['generate', '--ckpt', run, '--contrast', 'x']).stderr, /--contrast must be beta\[,alpha\]/);
  fs.rmSync(dir, { recursive: true, force: true });
});
