// issue 10 ("Honest reports"): docs/bench-routers.md describes the noise rule the report uses
// (t-intervals for the actual n, Welch ties, measured seed noise), with numbers computed here,
// and not the rules it replaced (mean ± 2·stderr as "~95%", a fixed 0.015-nat tie margin).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { COVERAGE, tCritical, studentTCdf } from '../../src/bench-routers/stats.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const doc = fs.readFileSync(path.join(ROOT, 'docs', 'bench-routers.md'), 'utf8').replace(/\s+/g, ' ');

test('docs/bench-routers.md states the t-interval and Welch rule of the code, with its numbers', () => {
  const pct = `${Math.round(COVERAGE * 100)}%`;
  assert.ok(doc.includes(`**${pct} t-interval**`), 'the interval and its coverage');
  assert.ok(doc.includes(`${pct} Welch interval of the difference`), 'the tie rule');
  assert.ok(doc.includes(`at n = 2 the multiplier is ${tCritical(1).toFixed(1)}, at n = 3 ${tCritical(2).toFixed(2)}`), 't multipliers');
  // what mean ± 2·stderr really covers at n = 2 and n = 3
  const cover = (df: number) => Math.round(100 * (2 * studentTCdf(2, df) - 1));
  assert.ok(doc.includes(`would cover only ~${cover(1)}% and ~${cover(2)}%`), `coverage of ± 2 SE: ${cover(1)}%, ${cover(2)}%`);
  assert.ok(doc.includes('**measured seed noise**'), 'the noise threshold comes from the seeds');
  for (const stale of ['~95% intervals', 'ties by overlapping', '0.015 nats', '0.015-nat', 'no band is drawn']) {
    assert.ok(!doc.includes(stale), `stale rule still described: "${stale}"`);
  }
});
