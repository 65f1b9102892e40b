import { test } from 'node:test';
import assert from 'node:assert/strict';
import { incompleteBeta, lnGamma, studentTCdf, studentTQuantile, tCritical, welch } from '../../src/bench-routers/stats.js';
import { clearlyBelowBaseline, unigramBaseline } from '../../src/bench-routers/metrics.js';
import { analyseRuns } from '../../src/bench-routers/summary.js';
import { renderReport } from '../../src/bench-routers/report/html.js';
import { routerColor, zoomRange, PALETTE, DENSE_COLOR } from '../../src/bench-routers/report/charts.js';
import { results, run, standardRuns } from './fixtures.js';

const close = (a: number, b: number, eps: number): void => assert.ok(Math.abs(a - b) < eps, `${a} != ${b}`);

test('lnGamma and the incomplete beta against closed forms', () => {
  close(lnGamma(1), 0, 1e-12);
  close(lnGamma(5), Math.log(24), 1e-12);
  close(lnGamma(0.5), 0.5 * Math.log(Math.PI), 1e-12);
  // I_x(1, 1) = x; I_x(a, 1) = x^a; I_x(1, b) = 1 - (1 - x)^b
  close(incompleteBeta(0.3, 1, 1), 0.3, 1e-12);
  close(incompleteBeta(0.3, 2.5, 1), 0.3 ** 2.5, 1e-12);
  close(incompleteBeta(0.8, 1, 3), 1 - 0.2 ** 3, 1e-12);
});

test('Student t quantiles match the tables, including fractional df', () => {
  // two-sided 95% critical values
  const table: [number, number][] = [
    [1, 12.706204736],
    [2, 4.30265273],
    [3, 3.182446305],
    [4, 2.776445105],
    [9, 2.262157163],
    [30, 2.042272456],
    [1000, 1.962339353],
  ];
  for (const [df, t] of table) close(tCritical(df), t, 1e-6);
  // one-sided 90% at df 5, and symmetry
  close(studentTQuantile(0.9, 5), 1.475884049, 1e-6);
  close(studentTQuantile(0.1, 5), -1.475884049, 1e-6);
  // df 1 is the Cauchy distribution: CDF = 1/2 + atan(t)/pi
  for (const t of [-3, -0.5, 0, 0.7, 10]) close(studentTCdf(t, 1), 0.5 + Math.atan(t) / Math.PI, 1e-10);
  // the CDF is continuous in df: 2.5 df lies between 2 and 3
  const q = tCritical(2.5);
  assert.ok(q < 4.30265273 && q > 3.182446305, `t(2.5 df) = ${q}`);
  // mean ± 2·stderr at n = 3 covers only ~82%, the point
  const cover = 2 * studentTCdf(2, 2) - 1;
  close(cover, 0.8165, 1e-4);
  assert.throws(() => studentTQuantile(1, 3), /p must be in \(0, 1\)/);
  assert.throws(() => studentTQuantile(0.5, 0), /df must be > 0/);
});

test('welch: degrees of freedom and verdicts against a hand computation', () => {
  // a: n 3, std 0.02; b: n 5, std 0.05. va = 0.0004/3, vb = 0.0025/5
  const va = 0.0004 / 3;
  const vb = 0.0025 / 5;
  const df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 4);
  const c = welch({ n: 3, mean: 2.0, std: 0.02 }, { n: 5, mean: 2.1, std: 0.05 })!;
  close(c.df, df, 1e-9);
  close(c.se, Math.sqrt(va + vb), 1e-12);
  close(c.halfWidth, tCritical(df) * Math.sqrt(va + vb), 1e-9);
  assert.equal(c.verdict, 'lower');
  assert.equal(welch({ n: 1, mean: 2, std: 0 }, { n: 3, mean: 2, std: 0.1 }), null);
  assert.equal(welch({ n: 3, mean: 2, std: 0 }, { n: 3, mean: 2.1, std: 0 }), null);
});

test('unigram baseline: cross-entropy of validation targets under add-one smoothed training frequencies', () => {
  // vocab 4, train counts [3, 1, 0, 0] (total 4): p = [(3+1)/8, 2/8, 1/8, 1/8]
  const b = unigramBaseline(
    [Int32Array.from([0, 0, 1]), Int32Array.from([0])],
    [
      { domain: 'a', targets: Int32Array.from([0, 1]) },
      { domain: 'b', targets: Int32Array.from([2, 2]) },
    ],
    4,
  );
  close(b.domains.a, -(Math.log(4 / 8) + Math.log(2 / 8)) / 2, 1e-12);
  close(b.domains.b, -Math.log(1 / 8), 1e-12);
  close(b.loss, (b.domains.a * 2 + b.domains.b * 2) / 4, 1e-12);
  assert.throws(() => unigramBaseline([Int32Array.from([7])], [], 4), /token 7 outside the vocabulary of 4/);
  assert.equal(clearlyBelowBaseline(2.9, 3.3), true);
  assert.equal(clearlyBelowBaseline(3.0, 3.3), false);
});

test('a benchmark not clearly below the unigram baseline is an undertrained smoke run with no recommendation', () => {
  const baseline = { loss: 3.3, domains: { shakespeare: 3.2, wikitext: 3.3, linux: 3.4 } };
  const runs = [run('dense', { kind: 'dense', losses: [3.5, 3.2] }), run('topk', { losses: [3.5, 3.1] }), run('switch', { losses: [3.5, 3.15] })];
  const r = results(runs, baseline);
  const a = r.analysis;
  assert.equal(a.smoke, true);
  assert.ok(a.routers.every((x) => x.undertrained));
  const text = a.recommendation.join(' ');
  assert.match(
    text,
    /\*\*No recommendation: undertrained smoke run\.\*\* The validation loss of the dense baseline \(3\.200\) is not clearly below the unigram baseline of this data, 3\.300 nats\/token/,
  );
  assert.doesNotMatch(text, /\*\*Recommendation:\*\*/);
  const page = renderReport(r);
  assert.match(page, /<p class="badge smoke" id="smoke">Undertrained smoke run: no recommendation<\/p>/);
  assert.match(page, /Unigram baseline of the validation data \(token frequencies only\): <strong>3\.300<\/strong>/);
  assert.match(page, /<tr class="baseline-row">/);
  // trained models: no smoke label; an undertrained router is left out of the recommendation
  const ok = analyseRuns([run('dense', { kind: 'dense', losses: [3, 2.2] }), run('topk', { losses: [3, 2.0] }), run('switch', { losses: [3.5, 3.2] })], { topK: 2, baseline });
  assert.equal(ok.smoke, false);
  const t2 = ok.recommendation.join(' ');
  assert.match(t2, /switch \(3\.200\) did not get clearly below the unigram baseline \(3\.300\) and is left out of the recommendation/);
  assert.match(t2, /use \*\*topk\*\*/);
  // without a baseline (older results) nothing is labelled
  assert.equal(analyseRuns(runs, { topK: 2 }).smoke, false);
});

test('router colours are stable across reports; the loss plot is zoomed past the initial drop', () => {
  const order = ['topk', 'switch', 'hash'];
  assert.equal(routerColor('switch', order), PALETTE[1]);
  assert.equal(routerColor('switch', ['switch']), PALETTE[0]);
  assert.equal(routerColor('anything', order, true), DENSE_COLOR);
  assert.equal(routerColor('custom', order), routerColor('custom', ['x', 'y']), 'an unregistered name hashes to the same colour everywhere');
  // a report with a subset of routers keeps each router's colour
  const all = renderReport(results(standardRuns()));
  const sub = renderReport(results(standardRuns().filter((r) => r.name !== 'topk')));
  const swatchOf = (page: string, name: string): string => page.match(new RegExp(`data-router="${name}">\\s*<td class="num">[^<]*</td>\\s*<td><span class="swatch" style="background:([^"]+)"`))![1];
  assert.equal(swatchOf(all, 'switch'), swatchOf(sub, 'switch'));
  assert.equal(swatchOf(all, 'top-p'), swatchOf(sub, 'top-p'));
  // zoom: the first quarter (5.5 -> 3) is above the range; the range covers the late values and a close reference line
  const z = zoomRange(
    [
      {
        points: [
          [0, 5.5],
          [1, 3],
          [2, 2.5],
          [3, 2.2],
          [4, 2.1],
          [5, 2.05],
          [6, 2.0],
          [7, 1.98],
        ],
      },
    ],
    0.25,
    [2.6],
  )!;
  assert.ok(z.max < 3 && z.max >= 2.6, `max ${z.max}`);
  assert.ok(z.min < 1.98 && z.min > 1.9, `min ${z.min}`);
  const far = zoomRange(
    [
      {
        points: [
          [0, 5.5],
          [1, 2.1],
          [2, 2.0],
          [3, 1.98],
        ],
      },
    ],
    0.25,
    [5.54],
  )!;
  assert.ok(far.max < 2.2, 'a far reference line does not undo the zoom');
});
