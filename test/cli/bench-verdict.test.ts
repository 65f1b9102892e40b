// issue 10: bench-routers prints the report's verdict in the terminal, not only in the HTML page.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { benchVerdict } from '../../src/cli/bench-verdict.js';
import { analyseRuns } from '../../src/bench-routers/summary.js';
import { run } from '../bench-routers/fixtures.js';

const baseline = { loss: 3.3, domains: { shakespeare: 3.2, wikitext: 3.3, linux: 3.4 } };

test('benchVerdict: the smoke-run sentence, or the recommendation, without markdown emphasis', () => {
  const smoke = analyseRuns([run('dense', { kind: 'dense', losses: [3.5, 3.2] }), run('topk', { losses: [3.5, 3.1] })], { topK: 2, baseline });
  const s = benchVerdict(smoke);
  assert.ok(s !== null);
  assert.match(s, /^No recommendation: undertrained smoke run\. The validation loss of the dense baseline \(3\.200\) is not clearly below the unigram baseline/);
  assert.doesNotMatch(s, /\*/);
  const trained = analyseRuns([run('dense', { kind: 'dense', losses: [3, 2.2] }), run('topk', { losses: [3, 2.0] })], { topK: 2, baseline });
  const t = benchVerdict(trained);
  assert.ok(t !== null);
  assert.match(t, /^Recommendation: on this data, use topk/);
  assert.equal(benchVerdict({ recommendation: ['Ranking by final loss.'] }), null);
});
