import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { compareLoss, mergeSeedRuns, seedNoise, seedStats } from '../../src/bench-routers/seeds.js';
import { analyseRuns } from '../../src/bench-routers/summary.js';
import { renderReport } from '../../src/bench-routers/report/html.js';
import type { BenchResults, RunRecord } from '../../src/bench-routers/types.js';
import { results, run } from './fixtures.js';

const close = (a: number, b: number, eps = 1e-9): void => assert.ok(Math.abs(a - b) < eps, `${a} != ${b}`);

test('seedStats: mean, sample std, stderr and the 95% t-interval against hand values', () => {
  const s = seedStats([1, 2, 3, 4]);
  assert.equal(s.n, 4);
  close(s.mean, 2.5);
  // sum of squares 2.25 + 0.25 + 0.25 + 2.25 = 5, / (n - 1) = 5/3
  close(s.std, Math.sqrt(5 / 3));
  close(s.stderr, Math.sqrt(5 / 3) / 2);
  // t_{0.975, 3} = 3.182446 (tables), not 2
  close(s.t, 3.182446305, 1e-8);
  close(s.low, 2.5 - 3.182446305 * (Math.sqrt(5 / 3) / 2), 1e-8);
  close(s.high, 2.5 + 3.182446305 * (Math.sqrt(5 / 3) / 2), 1e-8);
  assert.equal(s.coverage, 0.95);
  const two = seedStats([2.0, 2.1]);
  close(two.mean, 2.05);
  close(two.std, 0.1 / Math.SQRT2); // 0.0707...
  close(two.stderr, 0.05);
  close(two.t, 12.70620474, 1e-7);
  const one = seedStats([3]);
  assert.deepEqual([one.mean, one.std, one.stderr], [3, 0, 0]);
  assert.ok(Number.isNaN(one.low), 'no interval from one value');
  assert.throws(() => seedStats([]), /no values/);
});

test('compareLoss: Welch 95% interval of the difference; one seed is unmeasured, not tied', () => {
  const m = (finalLoss: number, lossStd: number, seeds = 3) => ({ finalLoss, lossStd, seeds });
  // equal std 0.01, n = 3: se = 0.01·sqrt(2/3) = 0.008165, df = 4, t = 2.776 -> half-width 0.02267
  const c = compareLoss(m(2.0, 0.01), m(2.03, 0.01));
  assert.equal(c.verdict, 'lower');
  close(c.comparison!.df, 4, 1e-9);
  close(c.comparison!.halfWidth, 2.776445105 * 0.01 * Math.sqrt(2 / 3), 1e-8);
  assert.equal(compareLoss(m(2.0, 0.01), m(2.02, 0.01)).verdict, 'tied');
  assert.equal(compareLoss(m(2.03, 0.01), m(2.0, 0.01)).verdict, 'higher');
  // the old mean ± 2·stderr overlap rule called this separated; with n = 3 and the t quantile it is not
  // (difference 0.05, stderr 0.01 each: old intervals [1.98, 2.02] and [2.03, 2.07]; Welch half-width 0.0393)
  const se = 0.01 * Math.sqrt(3);
  assert.equal(compareLoss(m(2.0, se), m(2.05, se)).verdict, 'lower');
  assert.equal(compareLoss(m(2.0, 0.02 * Math.sqrt(3)), m(2.05, 0.02 * Math.sqrt(3))).verdict, 'tied');
  // one seed: nothing is measured, whatever the difference
  const one = (finalLoss: number) => ({ finalLoss, lossStd: null, seeds: 1 });
  assert.equal(compareLoss(one(2.0), one(3.0)).verdict, 'unmeasured');
  assert.equal(compareLoss(m(2.0, 0.01), one(2.5)).verdict, 'unmeasured');
  assert.equal(compareLoss(one(2.0), { finalLoss: null, lossStd: null, seeds: 0 }).verdict, 'unmeasured');
});

test('seedNoise pools the within-model variance and gives the resolvable difference', () => {
  // two models of 3 seeds, std 0.03 and 0.04: pooled sqrt((2·0.0009 + 2·0.0016) / 4) = 0.035355, df 4
  const n = seedNoise([
    { finalLoss: 2, lossStd: 0.03, seeds: 3 },
    { finalLoss: 2.1, lossStd: 0.04, seeds: 3 },
    { finalLoss: 2.2, lossStd: null, seeds: 1 },
  ])!;
  close(n.pooledStd, Math.sqrt(0.00125), 1e-12);
  assert.equal(n.df, 4);
  assert.equal(n.models, 2);
  assert.equal(n.n, 3);
  close(n.threshold, 2.776445105 * Math.sqrt(0.00125) * Math.sqrt(2 / 3), 1e-8);
  assert.equal(seedNoise([{ finalLoss: 2, lossStd: null, seeds: 1 }]), null);
});

/** Two seeds of one model: the second seed's losses shifted by `shift`. */
function seedsOf(name: string, losses: number[], shift: number, o: { kind?: 'moe' | 'dense'; tps?: number; cv?: number } = {}): RunRecord[] {
  return [run(name, { losses, ...o }), run(name, { losses: losses.map((l) => l + shift), ...o, tps: (o.tps ?? 1000) + 200, cv: (o.cv ?? 0.1) + 0.1 })];
}

test('mergeSeedRuns: curves, final losses, routing and throughput are means over seeds; per-seed values kept', () => {
  const [a, b] = seedsOf('topk', [3, 2], 0.2);
  const m = mergeSeedRuns([a, b], [7, 8]);
  assert.equal(m.status, 'done');
  assert.deepEqual(
    m.curve.map((c) => c.step),
    [10, 20],
  );
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
  assert.deepEqual(
    m2.perSeed!.map((x) => [x.status, x.finalLoss]),
    [
      ['done', 2],
      ['diverged', null],
    ],
  );
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

function clearSeedRuns(): RunRecord[] {
  const seeds = [1, 2];
  return [
    mergeSeedRuns(seedsOf('dense', [3, 2.5], 0.02, { kind: 'dense' }), seeds),
    // topk 2.0 / 2.002, aux-free 2.001 / 2.003 (tied with topk), sigmoid 2.35 / 2.352 (separated)
    mergeSeedRuns(seedsOf('topk', [3, 2.0], 0.002), seeds),
    mergeSeedRuns(seedsOf('aux-free', [3, 2.001], 0.002, { tps: 3000 }), seeds),
    mergeSeedRuns(seedsOf('sigmoid', [3, 2.35], 0.002), seeds),
  ];
}

test('multi-seed analysis: t-intervals, Welch comparisons between routers and against dense, measured noise', () => {
  const a = analyseRuns(multiSeedRuns(), { topK: 2 });
  assert.equal(a.seeds, 2);
  const by = Object.fromEntries(a.routers.map((r) => [r.name, r]));
  close(by.topk.finalLoss!, 2.1);
  close(by.topk.lossStd!, 0.2 / Math.SQRT2);
  close(by.topk.lossStderr!, 0.1);
  // n = 2: t_{0.975, 1} = 12.706, so the 95% interval is 2.1 ± 1.27
  close(by.topk.interval!.low, 2.1 - 12.70620474 * 0.1, 1e-6);
  assert.equal(by.topk.seeds, 2);
  assert.deepEqual(
    by.topk.seedLosses.map((x) => +x.toFixed(6)),
    [2, 2.2],
  );
  assert.deepEqual(
    a.routers.map((r) => [r.name, r.rank]),
    [
      ['dense', 4],
      ['topk', 1],
      ['aux-free', 2],
      ['sigmoid', 3],
    ],
  );
  // with two seeds and topk's spread, nothing is distinguishable from topk; aux-free (tight) is below dense
  assert.equal(by.topk.vsDense, 'tied');
  assert.equal(by['aux-free'].vsDense, 'lower');
  assert.ok(by['aux-free'].diffVsDense!.high < 0);
  assert.ok(a.noise && a.noise.df === 4 && a.noise.models === 4);
  const text = a.recommendation.join(' ');
  assert.match(
    text,
    /Lowest mean validation loss at matched compute over 2 seeds: \*\*topk\*\* \(2\.100, 95% t-interval 0\.829–3\.371, n = 2; 0\.410 below the FLOP-matched dense baseline's 2\.510, which is within seed noise/,
  );
  assert.match(text, /\*\*aux-free\*\* and \*\*sigmoid\*\* are not distinguishable from it: the 95% Welch interval of the difference of seed means contains 0/);
  assert.match(text, /Measured seed noise: the final loss varies by 0\.071 nats \(standard deviation, pooled over 4 models, 4 degrees of freedom\)/);
  assert.match(text, /Against the dense baseline \(same 95% Welch rule\): of 3 trained routers, 2 below it beyond seed noise \(aux-free and sigmoid\) and 1 not distinguishable from it \(topk\)/);
  assert.match(text, /\*\*Recommendation:\*\* on this data, use \*\*topk\*\*/);
  assert.match(text, /It is not distinguishable from the dense baseline at this budget/);
  assert.match(text, /aux-free and sigmoid are statistically tied with it over 2 seeds, and aux-free ran faster here/);
  assert.doesNotMatch(text, /~95%|mean ± 2·stderr|Provisional/);
  // tight seeds: separations are called, ties only where the interval of the difference contains 0
  const clear = analyseRuns(clearSeedRuns(), { topK: 2 });
  const ct = clear.recommendation.join(' ');
  assert.match(ct, /\*\*aux-free\*\* is not distinguishable from it/);
  assert.doesNotMatch(ct, /\*\*sigmoid\*\* (is|are) not distinguishable/);
  assert.match(ct, /of 3 trained routers, 3 below it beyond seed noise/);
  assert.match(ct, /0\.509 below the FLOP-matched dense baseline's 2\.510, beyond seed noise \(95% Welch interval of the difference −0\.\d{3} to −0\.\d{3}\)/);
});

test('single-seed analysis makes no noise claim and a provisional recommendation', () => {
  const a = analyseRuns([run('dense', { kind: 'dense', losses: [3, 2.5] }), run('topk', { losses: [3, 2.0] }), run('aux-free', { losses: [3, 2.01] })], { topK: 2 });
  assert.equal(a.seeds, 1);
  assert.equal(a.routers[1].lossStd, null);
  assert.equal(a.routers[1].interval, null);
  const text = a.recommendation.join(' ');
  assert.match(text, /Lowest validation loss at matched compute: \*\*topk\*\* \(2\.000/);
  assert.match(text, /With one seed the seed-to-seed noise is not measured, so none of these differences is tested against it/);
  assert.match(text, /Provisional: one seed/);
  assert.doesNotMatch(text, /tied/);
});

test('the multi-seed report shows mean ± std (n), the t-interval, a per-seed table and mean curves with bands', () => {
  const runs = multiSeedRuns();
  const res: BenchResults = { ...results(runs), seeds: [1, 2] };
  const html = renderReport(res);
  assert.match(html, /2\.100 <span class="pm">± 0\.141<\/span> <span class="muted">n=2<\/span>/);
  assert.match(html, /Mean over 2 seeds \(1, 2\); the band is ± one standard deviation over seeds/);
  assert.match(html, /seeds 1, 2 \(every number is the mean over the 2 seeds unless stated\)/);
  assert.match(html, /<table class="seeds">/);
  assert.match(html, /0\.829 – 3\.371/); // topk's 95% t-interval
  assert.match(html, /<th>95% t-interval of the mean<\/th>/);
  assert.match(html, /Welch's 95% interval of the difference of the two means/);
  assert.match(html, /data-verdict="tied"/);
  assert.match(html, /data-verdict="lower"/);
  assert.doesNotMatch(html, /~95%/);
  // merged curves carry the seed std, drawn as bands (one polygon per model)
  assert.ok(runs.every((r) => r.curve.every((c) => typeof c.lossStd === 'number')));
  const lossFig = html.slice(html.indexOf('data-chart="val-loss"'), html.indexOf('</figure>', html.indexOf('data-chart="val-loss"')));
  assert.ok((lossFig.match(/fill-opacity="0\.16"|opacity="0\.16"/g) ?? []).length >= 4, 'a translucent band per model');
  // single seed: no ± anywhere in the ranking, the one-seed note
  const single = renderReport(results([run('dense', { kind: 'dense', losses: [3, 2.5] }), run('topk', { losses: [3, 2.0] })]));
  assert.doesNotMatch(single, /class="pm"|class="seeds"/);
  assert.match(single, /One seed: the seed-to-seed noise is not measured/);
  assert.match(single, /data-verdict="unmeasured"/);
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
  assert.deepEqual(
    res.runs.map((x) => x.name),
    ['dense', 'topk', 'switch'],
  );
  assert.equal(res.analysis.seeds, 2);
  for (const x of res.runs) {
    assert.deepEqual(
      x.perSeed!.map((s) => s.seed),
      [5, 6],
    );
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
