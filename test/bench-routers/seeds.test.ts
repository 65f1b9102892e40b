import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { isTied, mergeSeedRuns, seedStats, TIE_MARGIN } from '../../src/bench-routers/seeds.js';
import { analyseRuns } from '../../src/bench-routers/summary.js';
import { renderReport } from '../../src/bench-routers/report/html.js';
import type { BenchResults, RunRecord } from '../../src/bench-routers/types.js';
import { results, run } from './fixtures.js';

const close = (a: number, b: number, eps = 1e-9): void => assert.ok(Math.abs(a - b) < eps, `${a} != ${b}`);

test('seedStats: mean, sample std, stderr and the ~95% interval against hand values', () => {
  const s = seedStats([1, 2, 3, 4]);
  assert.equal(s.n, 4);
  close(s.mean, 2.5);
  // sum of squares 2.25 + 0.25 + 0.25 + 2.25 = 5, / (n - 1) = 5/3
  close(s.std, Math.sqrt(5 / 3));
  close(s.stderr, Math.sqrt(5 / 3) / 2);
  close(s.low, 2.5 - Math.sqrt(5 / 3));
  close(s.high, 2.5 + Math.sqrt(5 / 3));
  const two = seedStats([2.0, 2.1]);
  close(two.mean, 2.05);
  close(two.std, 0.1 / Math.SQRT2); // 0.0707...
  close(two.stderr, 0.05);
  const one = seedStats([3]);
  assert.deepEqual([one.mean, one.std, one.stderr], [3, 0, 0]);
  assert.throws(() => seedStats([]), /no values/);
});

test('tie rule: overlapping mean ± 2·stderr with several seeds, the fixed margin with one', () => {
  const m = (finalLoss: number, lossStderr: number, seeds = 3) => ({ finalLoss, lossStderr, seeds });
  // intervals [1.98, 2.02] and [2.03, 2.07]: separated
  assert.equal(isTied(m(2.0, 0.01), m(2.05, 0.01)), false);
  // [1.96, 2.04] and [2.03, 2.07]: overlap
  assert.equal(isTied(m(2.0, 0.02), m(2.05, 0.01)), true);
  // exactly touching counts as overlapping
  assert.equal(isTied(m(2.0, 0.0125), m(2.05, 0.0125)), true);
  // a 0.01 difference is a tie by the single-seed margin, but not with tight intervals over seeds
  assert.equal(isTied(m(2.0, 0.001), m(2.01, 0.001)), false);
  // a 0.1 difference is beyond the single-seed margin, but a tie when the seeds scatter
  assert.equal(isTied(m(2.0, 0.03), m(2.1, 0.03)), true);
  // single seed: the fixed margin
  const s = (finalLoss: number) => ({ finalLoss, lossStderr: null, seeds: 1 });
  assert.equal(isTied(s(2.0), s(2.0 + TIE_MARGIN / 2)), true);
  assert.equal(isTied(s(2.0), s(2.0 + TIE_MARGIN * 2)), false);
  assert.equal(isTied(s(2.0), { finalLoss: null, lossStderr: null, seeds: 0 }), false);
});

/** Two seeds of one model: the second seed's losses shifted by `shift`. */
function seedsOf(name: string, losses: number[], shift: number, o: { kind?: 'moe' | 'dense'; tps?: number; cv?: number } = {}): RunRecord[] {
  return [run(name, { losses, ...o }), run(name, { losses: losses.map((l) => l + shift), ...o, tps: (o.tps ?? 1000) + 200, cv: (o.cv ?? 0.1) + 0.1 })];
}

test('mergeSeedRuns: curves, final losses, routing and throughput are means over seeds; per-seed values kept', () => {
  const [a, b] = seedsOf('topk', [3, 2], 0.2);
  const m = mergeSeedRuns([a, b], [7, 8]);
  assert.equal(m.status, 'done');
  assert.deepEqual(m.curve.map((c) => c.step), [10, 20]);
  close(m.curve[0].loss, 3.1);
  close(m.curve[1].loss, 2.1);
  close(m.curve[1].domains.linux, 2.2); // loss + 0.1 per seed, averaged
  close(m.final!.loss, 2.1);
  close(m.final!.domains[0].loss, 2.0);
  // the fixture's final load CV is o.cv ?? 0 (seed 1: 0, seed 2: 0.2); its interval CV o.cv ?? 0.1 (0.1 and 0.2)
  close(m.final!.routing.loadCV, 0.1);
  close(m.intervals[0].loadCV, 0.15);
  close(m.tokensPerSec, 1100);
  assert.equal(m.wallSeconds, 2);
  assert.deepEqual(
    m.perSeed!.map((x) => [x.seed, x.status, +x.finalLoss!.toFixed(6)]),
    [
      [7, 'done', 2],
      [8, 'done', 2.2],
    ],
  );
  // a diverged seed is listed but left out of the means
  const div: RunRecord = { ...run('topk', { losses: [9, 9] }), status: 'diverged', error: 'nan', final: null };
  const m2 = mergeSeedRuns([a, div], [7, 8]);
  close(m2.final!.loss, 2);
  assert.deepEqual(m2.perSeed!.map((x) => [x.status, x.finalLoss]), [
    ['done', 2],
    ['diverged', null],
  ]);
  const m3 = mergeSeedRuns([div, div], [7, 8]);
  assert.equal(m3.status, 'diverged');
  assert.match(m3.error!, /seed 7: nan; seed 8: nan/);
});

function multiSeedRuns(): RunRecord[] {
  const seeds = [1, 2];
  return [
    mergeSeedRuns(seedsOf('dense', [3, 2.5], 0.02, { kind: 'dense' }), seeds),
    // topk: 2.0 / 2.2 -> mean 2.1, std 0.1414, stderr 0.1
    mergeSeedRuns(seedsOf('topk', [3, 2.0], 0.2), seeds),
    // aux-free: 2.15 / 2.17 -> mean 2.16 (0.06 worse but inside topk's wide interval): tied
    mergeSeedRuns(seedsOf('aux-free', [3, 2.15], 0.02, { tps: 3000 }), seeds),
    // sigmoid: 2.35 / 2.352 -> mean 2.351: [2.349, 2.353] vs topk's [1.9, 2.3]: separated
    mergeSeedRuns(seedsOf('sigmoid', [3, 2.35], 0.002), seeds),
  ];
}

test('multi-seed analysis: mean ± std per model, ranking by mean, ties by overlapping intervals', () => {
  const a = analyseRuns(multiSeedRuns(), { topK: 2 });
  assert.equal(a.seeds, 2);
  const by = Object.fromEntries(a.routers.map((r) => [r.name, r]));
  close(by.topk.finalLoss!, 2.1);
  close(by.topk.lossStd!, 0.2 / Math.SQRT2);
  close(by.topk.lossStderr!, 0.1);
  assert.equal(by.topk.seeds, 2);
  assert.deepEqual(by.topk.seedLosses.map((x) => +x.toFixed(6)), [2, 2.2]);
  assert.deepEqual(
    a.routers.map((r) => [r.name, r.rank]),
    [
      ['dense', 4],
      ['topk', 1],
      ['aux-free', 2],
      ['sigmoid', 3],
    ],
  );
  const text = a.recommendation.join(' ');
  assert.match(text, /Lowest mean validation loss over 2 seeds: \*\*topk\*\* \(2\.100 ± 0\.141 std/);
  assert.match(text, /\*\*aux-free\*\* overlaps with it: the ~95% intervals \(mean ± 2·stderr over the seeds\) are not separated/);
  assert.doesNotMatch(text, /\*\*sigmoid\*\* overlaps/);
  assert.match(text, /\*\*Recommendation:\*\* on this data, use \*\*topk\*\*/);
  assert.match(text, /aux-free is statistically tied with it \(overlapping ~95% intervals over 2 seeds\), and aux-free ran faster here/);
  assert.doesNotMatch(text, /single-seed noise|confirm with a second seed/);
  // one clear winner: separated intervals are said so
  const clear = analyseRuns([multiSeedRuns()[0], multiSeedRuns()[3], mergeSeedRuns(seedsOf('topk', [3, 2.0], 0.002), [1, 2])], { topK: 2 });
  assert.match(clear.recommendation.join(' '), /separated from every other router's, so the ranking at the top is not seed noise/);
  assert.match(clear.recommendation.join(' '), /no other usable router's ~95% interval overlaps it/);
});

test('single-seed analysis keeps the fixed-margin wording', () => {
  const a = analyseRuns([run('dense', { kind: 'dense', losses: [3, 2.5] }), run('topk', { losses: [3, 2.0] }), run('aux-free', { losses: [3, 2.01] })], { topK: 2 });
  assert.equal(a.seeds, 1);
  assert.equal(a.routers[1].lossStd, null);
  const text = a.recommendation.join(' ');
  assert.match(text, /Lowest validation loss: \*\*topk\*\* \(2\.000/);
  assert.match(text, /within 0\.015 of it, which is inside single-seed noise/);
  assert.match(text, /confirm with a second seed/);
});

test('the multi-seed report shows mean ± std (n), a per-seed table, and mean curves', () => {
  const runs = multiSeedRuns();
  const res: BenchResults = { ...results(runs), seeds: [1, 2] };
  const html = renderReport(res);
  assert.match(html, /2\.100 <span class="pm">± 0\.141<\/span> <span class="muted">n=2<\/span>/);
  assert.match(html, /Mean over 2 seeds \(1, 2\)/);
  assert.match(html, /seeds 1, 2 \(every number is the mean over the 2 seeds unless stated\)/);
  assert.match(html, /<table class="seeds">/);
  assert.match(html, /1\.900 – 2\.300/); // topk's mean ± 2·stderr
  assert.match(html, /~95% intervals, mean ± 2·stderr/);
  // single seed: no ± anywhere in the ranking, the fixed-margin note
  const single = renderReport(results([run('dense', { kind: 'dense', losses: [3, 2.5] }), run('topk', { losses: [3, 2.0] })]));
  assert.doesNotMatch(single, /class="pm"|class="seeds"/);
  assert.match(single, /within 0\.015 nats are within single-seed noise/);
});

// ---- smoke: the CLI with --seeds 2 and two routers on a tiny config ----

const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../src/cli/main.js');
const TINY = {
  model: { hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, max_position_embeddings: 16, num_local_experts: 4, num_experts_per_tok: 2, moe_intermediate_size: 8, intermediate_size: 16 },
  training: { steps: 3, batch_size: 2, seq_len: 16, warmup_steps: 1, eval_interval: 1, eval_batches: 1, save_interval: 3 },
};

function cli(args: string[], cwd: string): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { cwd, encoding: 'utf8', env: { ...process.env, MOE_DEBUG: '' } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('smoke: --seeds 2 with two routers trains each (model, seed) in its own folder and reports mean ± std', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'moe-ts-bench-seeds-'));
  const cfgFile = path.join(dir, 'tiny.json');
  fs.writeFileSync(cfgFile, JSON.stringify(TINY));
  const out = path.join(dir, 'out');
  const base = ['bench-routers', '--config', cfgFile, '--routers', 'topk,switch', '--data', 'shakespeare', '--out', out, '--backend', 'js', '--seed', '5'];
  // a single-seed benchmark first: its folders become seed 5 of the two-seed one
  const r1 = cli(base, dir);
  assert.equal(r1.code, 0, r1.stderr);
  const r = cli([...base, '--seeds', '2'], dir);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^bench-routers: 3 models \(2 routers \+ dense baseline\), 3 steps x 32 tokens = 96 tokens each, 2 seeds \(5, 6\): 6 runs/);
  for (const [i, name] of ['dense', 'topk', 'switch'].entries()) {
    assert.match(r.stdout, new RegExp(`\\[${i + 1}/6\\] ${name} seed 5: skipped, already finished`));
    assert.match(r.stdout, new RegExp(`\\[${i + 4}/6\\] ${name} seed 6: done in`));
    assert.ok(fs.existsSync(path.join(out, 'runs', name, 'bench.json')));
    assert.ok(fs.existsSync(path.join(out, 'runs', name, 'seed-6', 'bench.json')));
    assert.ok(fs.existsSync(path.join(out, 'runs', name, 'seed-6', 'bench-fingerprint.txt')));
  }
  const res = JSON.parse(fs.readFileSync(path.join(out, 'results.json'), 'utf8')) as BenchResults;
  assert.deepEqual(res.seeds, [5, 6]);
  assert.deepEqual(res.runs.map((x) => x.name), ['dense', 'topk', 'switch']);
  assert.equal(res.analysis.seeds, 2);
  for (const x of res.runs) {
    assert.deepEqual(x.perSeed!.map((s) => s.seed), [5, 6]);
    const [a, b] = x.perSeed!.map((s) => s.finalLoss!);
    close(x.final!.loss, (a + b) / 2, 1e-12);
    assert.notEqual(a, b, 'another seed gives another run');
    const an = res.analysis.routers.find((y) => y.name === x.name)!;
    close(an.lossStd!, Math.abs(a - b) / Math.SQRT2, 1e-12);
  }
  const html = fs.readFileSync(path.join(out, 'report.html'), 'utf8');
  assert.equal((html.match(/class="pm">± \d\.\d{3}/g) ?? []).length, 3);
  assert.ok(html.includes('<table class="seeds">'));
  // a rerun skips all six; another base seed is refused, naming the folder
  const again = cli([...base, '--seeds', '2'], dir);
  assert.equal(again.code, 0, again.stderr);
  assert.ok(!again.stdout.includes('training...'), again.stdout);
  const other = cli([...base.slice(0, -1), '6', '--seeds', '2'], dir);
  assert.equal(other.code, 1);
  assert.match(other.stderr, /runs\/dense holds a run of a different configuration/);
  const bad = cli([...base, '--seeds', '0'], dir);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /--seeds must be an integer >= 1/);
  fs.rmSync(dir, { recursive: true, force: true });
});
