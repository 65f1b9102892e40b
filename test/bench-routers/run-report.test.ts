import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { train } from '../../src/train/trainer.js';
import { downsample, parseRunLog, readRun, renderRunReport, writeRunReport } from '../../src/bench-routers/report/run-report.js';
import { tinyConfig, tmpDir } from '../train/helpers.js';

const dir = tmpDir('run-report');
const runDir = path.join(dir, 'run');
const denseDir = path.join(dir, 'dense');
const ready = (async () => {
  await train({ config: tinyConfig({ training: { steps: 8, eval_interval: 2, save_interval: 4 }, data: { sources: ['shakespeare', 'linux'] } }), outDir: runDir });
  await train({ config: tinyConfig({ model: { num_local_experts: 0 }, training: { steps: 4, eval_interval: 2, save_interval: 4 } }), outDir: denseDir });
})();

test('report RUN: every logged series is charted, the final evaluation tabled, the page written atomically', async () => {
  await ready;
  const { path: file, run } = writeRunReport(runDir);
  assert.equal(file, path.join(runDir, 'report.html'));
  assert.equal(run.steps.length, 8);
  assert.deepEqual(
    run.evals.map((e) => e.step),
    [2, 4, 6, 8],
  );
  assert.ok(run.config && (run.config.model as Record<string, unknown>).num_local_experts === 4);
  const page = fs.readFileSync(file, 'utf8');
  for (const id of ['loss', 'lr', 'grad-norm', 'load-balance', 'dropped', 'experts-per-token', 'router-entropy', 'aux-losses', 'throughput'])
    assert.ok(page.includes(`data-chart="${id}"`), `chart ${id}`);
  assert.equal((page.match(/<svg[\s>]/g) ?? []).length, (page.match(/<figure class="chart/g) ?? []).length);
  assert.match(page, /finished: 8 steps/);
  assert.match(page, /shakespeare \(verse\)/);
  assert.match(page, /linux \(code\)/);
  assert.match(page, /Validation loss <strong>\d\.\d{4}<\/strong> \(perplexity/);
  // the per-domain validation lines are in the loss chart's legend
  assert.match(page, /val shakespeare/);
  assert.ok(!fs.readdirSync(runDir).some((f) => f.endsWith('.tmp')), 'no temp file left');
  // a dense run has no routing charts
  const dense = renderRunReport(readRun(denseDir));
  assert.ok(dense.includes('data-chart="grad-norm"'));
  assert.ok(!dense.includes('data-chart="load-balance"'));
  assert.match(dense, /A dense model: no routing metrics/);
});

test('report RUN in headless Chromium: every chart drawn, no console errors', async (t) => {
  await ready;
  const { launchChromium } = await import('../helpers/chromium.js');
  const b = await launchChromium();
  if (!b) {
    t.skip('no Chromium (/usr/bin/chromium or CHROMIUM_PATH)');
    return;
  }
  try {
    const { path: file } = writeRunReport(runDir, path.join(dir, 'page.html'));
    const page = await b.ctx.newPage();
    const errors: string[] = [];
    page.on('console', (m) => {
      if (m.type() === 'error') errors.push(m.text());
    });
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto('file://' + file, { waitUntil: 'load' });
    const charts = await page.$$eval('figure.chart', (figs) =>
      figs.map((f) => {
        const svg = f.querySelector('svg');
        const box = svg?.getBoundingClientRect();
        const paths = svg ? [...svg.querySelectorAll('path')].filter((p) => (p.getAttribute('d') ?? '').length > 2) : [];
        return { id: f.getAttribute('data-chart'), w: box?.width ?? 0, h: box?.height ?? 0, paths: paths.length };
      }),
    );
    assert.equal(charts.length, 9);
    for (const c of charts) {
      assert.ok(c.w > 50 && c.h > 50, `${c.id}: rendered size ${c.w}x${c.h}`);
      assert.ok(c.paths > 0, `${c.id}: no drawn paths`);
    }
    assert.equal(await page.locator('table.domains tbody tr').count(), 2);
    assert.deepEqual(errors, []);
  } finally {
    await b.close();
  }
});

test('report RUN: malformed logs get one-line errors naming the line and field; a torn last line is skipped', async () => {
  await ready;
  const ok = '{"type":"step","step":1,"loss":3.2,"lr":0.001}\n';
  assert.equal(parseRunLog(ok + '{"type":"eval","st').skippedLines, 1);
  assert.throws(() => parseRunLog('{"type":"step","st\n' + ok, 'L'), /^Error: L line 1: not valid JSON$/);
  assert.throws(() => parseRunLog('{"type":"step","step":-1,"loss":1}\n'), /line 1: field step must be an integer >= 0/);
  assert.throws(() => parseRunLog(ok + '{"type":"step","step":2,"loss":"x"}\n'), /line 2: field loss must be a number/);
  assert.throws(() => parseRunLog('{"type":"step","step":2,"loss":1,"gradNorm":"big"}\n'), /line 1: field gradNorm must be a number/);
  assert.throws(() => parseRunLog('{"type":"eval","step":2,"loss":1,"domains":[{"domain":3}]}\n'), /line 1: field domains\[0\] must be \{domain: string, loss: number\}/);
  const empty = tmpDir('run-report-empty');
  assert.throws(() => readRun(empty), /has no log\.jsonl/);
  fs.writeFileSync(path.join(empty, 'log.jsonl'), '\n');
  assert.throws(() => readRun(empty), /holds no step or eval records/);
  assert.throws(() => readRun(path.join(empty, 'missing')), /is not a run directory/);
  // an interrupted run without results.json still reports, from its log
  fs.writeFileSync(path.join(empty, 'log.jsonl'), ok + '{"type":"eval","step":1,"loss":3.1,"domains":[{"domain":"a<b>","loss":3.1}]}\n');
  const page = renderRunReport(readRun(empty));
  assert.match(page, /in progress or interrupted: last logged step 1/);
  assert.match(page, /a&lt;b&gt;/);
  fs.rmSync(empty, { recursive: true, force: true });
});

test('downsample keeps at most max points as bucket means', () => {
  const pts = Array.from({ length: 1000 }, (_, i) => [i, i % 2] as [number, number]);
  const d = downsample(pts, 100);
  assert.equal(d.length, 100);
  for (const [, y] of d) assert.ok(Math.abs(y - 0.5) < 1e-12);
  assert.equal(downsample(pts.slice(0, 10), 100).length, 10);
});

test.after(() => fs.rmSync(dir, { recursive: true, force: true }));
