import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { benchRouters, buildBenchConfig, planBenchmark } from '../../src/bench-routers/run.js';
import { train } from '../../src/train/trainer.js';
import type { BenchResults, RunRecord } from '../../src/bench-routers/types.js';

const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../src/cli/main.js');
const CHROMIUM = '/usr/bin/chromium';

function tmpDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `moe-ts-bench-${prefix}-`));
}

/** A code-like second domain, so the tests need no shared corpora. */
function codeCorpus(dir: string): string {
  const lines: string[] = [];
  for (let i = 0; i < 400; i++) lines.push(`static int f${i}(struct dev *d) { if (d->n > ${i}) return -EINVAL; d->n += ${i % 7}; return 0; }`);
  const p = path.join(dir, 'code.txt');
  fs.writeFileSync(p, lines.join('\n'));
  return p;
}

const TINY = {
  model: { hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, max_position_embeddings: 16, num_local_experts: 4, num_experts_per_tok: 2, moe_intermediate_size: 8, intermediate_size: 16 },
  training: { steps: 3, batch_size: 2, seq_len: 16, warmup_steps: 1, eval_interval: 1, eval_batches: 1, save_interval: 3 },
};

function cli(args: string[], cwd: string): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { cwd, encoding: 'utf8', env: { ...process.env, MOE_DEBUG: '' } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const dir = tmpDir('smoke');
const cfgFile = path.join(dir, 'tiny.json');
fs.writeFileSync(cfgFile, JSON.stringify(TINY));
const code = codeCorpus(dir);
const out = path.join(dir, 'out');
const args = ['bench-routers', '--config', cfgFile, '--routers', 'topk,switch', '--data', 'shakespeare', code, '--out', out, '--backend', 'js'];

test('smoke: two routers + dense produce report.html and results.json', () => {
  const r = cli(args, dir);
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trim().split('\n');
  // a header, start + finish per model, the report line, then the verdict (here: no recommendation)
  assert.match(lines[0], /^bench-routers: 3 models \(2 routers \+ dense baseline\), 3 steps x 32 tokens/);
  for (const [i, name] of ['dense', 'topk', 'switch'].entries()) {
    assert.ok(lines.includes(`[${i + 1}/3] ${name}: training...`), r.stdout);
    assert.ok(
      lines.some((l) => new RegExp(`^\\[${i + 1}/3\\] ${name}: done in [\\d.]+ s, val loss \\d+\\.\\d{4}`).test(l)),
      r.stdout,
    );
  }
  assert.match(lines[lines.length - 2], /^report: .*report\.html/);
  assert.match(lines[lines.length - 1], /^No recommendation: undertrained smoke run\. The validation loss of .* is not clearly below the unigram baseline/);
  assert.ok(
    lines.some((l) => /^unigram baseline of the validation data: \d+\.\d{4} nats\/token$/.test(l)),
    r.stdout,
  );
  const res = JSON.parse(fs.readFileSync(path.join(out, 'results.json'), 'utf8')) as BenchResults;
  assert.equal(res.format, 'moe-ts-bench-routers');
  assert.deepEqual(
    res.runs.map((x) => x.name),
    ['dense', 'topk', 'switch'],
  );
  assert.deepEqual(res.domains, ['shakespeare', 'code']);
  for (const x of res.runs) {
    assert.equal(x.status, 'done');
    assert.equal(x.tokens, 3 * 32);
    assert.equal(x.curve.length, 3);
    assert.ok(Number.isFinite(x.final!.loss));
  }
  // same budget, same active FLOPs: dense FFN width = k * expert width + the preset's shared expert (TRAIN_DEFAULT_MODEL)
  assert.equal(res.runs[1].model.n_shared_experts, 1);
  assert.equal(res.runs[0].model.intermediate_size, 2 * 8 + 8);
  assert.equal(res.runs[0].model.num_local_experts, 0);
  assert.equal(res.runs[1].model.router_type, 'topk');
  assert.equal(res.runs[2].model.router_type, 'switch');
  assert.equal(res.runs[1].final!.expertUsage.length, 1);
  assert.equal(res.runs[1].final!.expertUsage[0].length, 2);
  assert.equal(res.runs[1].intervals.length, 3);
  assert.equal(res.analysis.reference, 'dense');
  // 3 steps of a tiny model: nowhere near below the unigram baseline, so a smoke run with no recommendation
  assert.ok(res.baseline && res.baseline.loss > 2 && res.baseline.loss < Math.log(256), `unigram baseline ${res.baseline?.loss}`);
  assert.deepEqual(Object.keys(res.baseline.domains), ['shakespeare', 'code']);
  assert.equal(res.analysis.smoke, true);
  assert.ok(res.analysis.recommendation[0].startsWith('**No recommendation: undertrained smoke run.**'));
  assert.ok(!res.analysis.recommendation.some((s) => s.startsWith('**Recommendation:**')));
  const html = fs.readFileSync(path.join(out, 'report.html'), 'utf8');
  assert.equal((html.match(/<svg[\s>]/g) ?? []).length, (html.match(/<figure class="chart/g) ?? []).length);
  assert.ok(html.includes('class="ranking"') && html.includes('class="domains"'));
});

test('rerun skips finished routers and rewrites the report', () => {
  const before = fs.readFileSync(path.join(out, 'runs', 'topk', 'bench.json'), 'utf8');
  const r = cli(args, dir);
  assert.equal(r.code, 0, r.stderr);
  for (const [i, name] of ['dense', 'topk', 'switch'].entries()) assert.match(r.stdout, new RegExp(`\\[${i + 1}/3\\] ${name}: skipped, already finished \\(val loss`));
  assert.ok(!r.stdout.includes('training...'), r.stdout);
  assert.equal(fs.readFileSync(path.join(out, 'runs', 'topk', 'bench.json'), 'utf8'), before);
  assert.ok(fs.existsSync(path.join(out, 'report.html')));
});

test('an unknown router fails clearly before anything trains', () => {
  const o2 = path.join(dir, 'out-unknown');
  const r = cli(['bench-routers', '--config', cfgFile, '--routers', 'topk,no-such-router', '--data', 'shakespeare', '--out', o2, '--backend', 'js'], dir);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /unknown router "no-such-router" \(registered: topk, switch/);
  assert.ok(!fs.existsSync(o2), 'nothing was written');
  // bad router options are caught up front too
  const bad = path.join(dir, 'bad.json');
  fs.writeFileSync(bad, JSON.stringify({ ...TINY, bench: { router_options: { switch: { noSuchOption: 1 } } } }));
  const r2 = cli(['bench-routers', '--config', bad, '--routers', 'topk,switch', '--data', 'shakespeare', '--out', o2, '--backend', 'js'], dir);
  assert.equal(r2.code, 1);
  assert.match(r2.stderr, /router "switch" cannot be built with this config: .*unknown option "noSuchOption"/);
  assert.ok(!fs.existsSync(o2));
});

test('a rerun with a different configuration refuses to mix results', () => {
  const r = cli([...args, '--steps', '4'], dir);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /runs\/dense holds a run of a different configuration/);
});

test('a crash mid-benchmark keeps finished routers; the rerun continues, resuming an interrupted one', async () => {
  const d = tmpDir('crash');
  const { config } = buildBenchConfig({ file: { value: TINY, path: 'tiny' }, data: ['shakespeare', codeCorpus(d)] });
  const o = path.join(d, 'out');
  const logs: string[] = [];
  await assert.rejects(
    benchRouters({
      config,
      routers: ['topk', 'switch'],
      outDir: o,
      log: (l) => logs.push(l),
      beforeRun: (name) => {
        if (name === 'switch') throw new Error('simulated crash');
      },
    }),
    /bench-routers: switch failed: simulated crash\. Finished results are kept \(dense, topk\); rerun the same command to continue/,
  );
  assert.ok(fs.existsSync(path.join(o, 'runs', 'dense', 'bench.json')));
  assert.ok(fs.existsSync(path.join(o, 'runs', 'topk', 'bench.json')));
  assert.ok(!fs.existsSync(path.join(o, 'results.json')));
  // switch gets interrupted after 2 of its 3 steps (as if killed): the rerun resumes it from the checkpoint
  const plan = planBenchmark({ config, routers: ['topk', 'switch'] }).find((p) => p.name === 'switch')!;
  const sw = path.join(o, 'runs', 'switch');
  await train({ config: { ...plan.config, training: { ...plan.config.training, save_interval: 1 } }, outDir: sw, stopAfter: 2 });
  fs.writeFileSync(path.join(sw, 'bench-fingerprint.txt'), plan.fingerprint + '\n');
  const logs2: string[] = [];
  const res = await benchRouters({ config, routers: ['topk', 'switch'], outDir: o, log: (l) => logs2.push(l) });
  assert.deepEqual(res.skipped, ['dense', 'topk']);
  assert.ok(
    logs2.some((l) => /\[3\/3\] switch: training \(resuming from its latest checkpoint\)/.test(l)),
    logs2.join('\n'),
  );
  const rec = JSON.parse(fs.readFileSync(path.join(sw, 'bench.json'), 'utf8')) as RunRecord;
  assert.equal(rec.steps, 3);
  // the interval metrics cover the steps trained before the interruption too
  assert.deepEqual(
    rec.intervals.map((i) => i.step),
    [1, 2, 3],
  );
  assert.ok(fs.existsSync(path.join(o, 'report.html')));
});

test('config file and flags override the preset field by field', () => {
  const { config, routerOptions } = buildBenchConfig({
    quick: true,
    file: { value: { model: { num_local_experts: 6 }, training: { lr: 0.01 }, bench: { router_options: { 'expert-choice': { capacityFactor: 2 } } } }, path: 'f.json' },
    steps: 24,
    seed: 7,
    // only the embedded corpus, so this runs where no shared data directory exists
    data: ['shakespeare'],
  });
  assert.equal(config.model.num_local_experts, 6);
  assert.equal(config.model.hidden_size, 32); // from the quick preset
  assert.equal(config.training.lr, 0.01);
  assert.equal(config.training.steps, 24);
  assert.equal(config.training.eval_interval, 2); // ~12 curve points
  assert.equal(config.training.seed, 7);
  assert.deepEqual(routerOptions, { 'expert-choice': { capacityFactor: 2 } });
  // soft routing is FLOP-matched through its slot count: B*T*k/E slots per expert (8*32*2/6 = 85.3)
  const soft = planBenchmark({ config, routers: ['soft'], routerOptions }).find((p) => p.name === 'soft')!;
  assert.equal(soft.config.model.router_options.slotsPerExpert, 85);
  assert.match(soft.description, /slotsPerExpert 85 = batch tokens × k \/ E/);
  assert.throws(() => buildBenchConfig({ file: { value: { model: { hidden_size: -1 } }, path: 'f.json' } }), /config f\.json: .*model\.hidden_size/);
  assert.throws(() => buildBenchConfig({ file: { value: { bench: { typo: 1 } }, path: 'f.json' } }), /bench\.typo: unknown field/);
});

test('the report renders in headless Chromium: every chart drawn, no console errors', async (t) => {
  if (!fs.existsSync(CHROMIUM)) {
    t.skip(`${CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium) to run the browser check`);
    return;
  }
  const report = path.join(out, 'report.html');
  assert.ok(fs.existsSync(report), 'the smoke test wrote the report');
  const { chromium } = await import('playwright-core');
  const userDataDir = tmpDir('chromium-profile');
  const ctx = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: { width: 1200, height: 900 },
  });
  try {
    const page = await ctx.newPage();
    const errors: string[] = [];
    page.on('console', (m) => {
      if (m.type() === 'error') errors.push(m.text());
    });
    page.on('pageerror', (e) => errors.push(e.message));
    const resp = await page.goto('file://' + report, { waitUntil: 'load' });
    assert.ok(resp === null || resp.ok());
    const charts = await page.$$eval('figure.chart', (figs) =>
      figs.map((f) => {
        const svg = f.querySelector('svg');
        const box = svg?.getBoundingClientRect();
        const paths = svg ? [...svg.querySelectorAll('path')].filter((p) => (p.getAttribute('d') ?? '').length > 2) : [];
        return { id: f.getAttribute('data-chart'), svgs: f.querySelectorAll('svg').length, w: box?.width ?? 0, h: box?.height ?? 0, paths: paths.length };
      }),
    );
    // 7 charts + per MoE router and layer (2 routers x 1 layer) a heatmap, or one line when its usage is uniform
    const uniform = await page.locator('p.uniform-line').count();
    assert.equal(charts.length + uniform, 9);
    for (const c of charts) {
      assert.equal(c.svgs, 1, `${c.id}: one svg`);
      assert.ok(c.w > 50 && c.h > 50, `${c.id}: rendered size ${c.w}x${c.h}`);
      assert.ok(c.paths > 0, `${c.id}: no drawn paths`);
    }
    assert.equal(await page.locator('table.ranking tbody tr').count(), 3);
    assert.deepEqual(errors, []);
  } finally {
    await ctx.close();
    fs.rmSync(userDataDir, { recursive: true, force: true });
  }
});
