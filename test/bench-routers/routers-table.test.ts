// The report's "routers compared" table: paper, summary, experts/token used, compute vs dense and
// the caveats of each router's traits (issue 15, "Benchmark and report").
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { renderReport } from '../../src/bench-routers/report/html.js';
import { routerRegistry } from '../../src/moe/routers/index.js';
import { results, run } from './fixtures.js';

test('one row per MoE router with its paper, summary, experts per token used, compute vs dense and trait caveats', () => {
  const runs = [
    run('dense', { kind: 'dense', losses: [3, 2.5, 2.2] }),
    run('topk', { losses: [3, 2.4, 2.1], ept: 2 }),
    run('base-layer', { losses: [3, 2.5, 2.3], ept: 1 }),
    run('smoe-dropout', { losses: [3, 2.5, 2.25], ept: 3 }),
  ];
  const page = renderReport(results(runs));
  const section = page.slice(page.indexOf('id="routers"'), page.indexOf('id="curves"'));
  assert.ok(section.length > 0);
  const row = (name: string) => {
    const i = section.indexOf(`<tr data-router="${name}">`);
    assert.ok(i >= 0, `${name} has a row`);
    return section.slice(i, section.indexOf('</tr>', i));
  };
  assert.ok(!section.includes('data-router="dense"'), 'the dense baseline has no router row');
  const base = routerRegistry.spec('base-layer');
  const b = row('base-layer');
  assert.ok(b.includes(`${base.paper!.title} (${base.paper!.year})`));
  assert.ok(b.includes(base.summary.replace(/'/g, '&#39;')));
  assert.match(b, /<td class="num">1\.00<\/td>\s*<td class="num">0\.50×<\/td>/);
  assert.match(b, /batch-dependent: /);
  assert.match(b, /inference differs from training: /);
  assert.match(row('smoe-dropout'), /<td class="num">3\.00<\/td>\s*<td class="num">1\.50×<\/td>/);
  assert.match(row('topk'), /<td class="notes">—<\/td>/);
});

test('compute vs dense counts the shared experts on both sides (the default preset: top-1 + 1 shared expert)', () => {
  const withShared = (r: ReturnType<typeof run>, k: number) => ({ ...r, model: { ...r.model, n_shared_experts: 1, num_experts_per_tok: k } });
  const runs = [run('dense', { kind: 'dense', losses: [3, 2.5, 2.2] }), withShared(run('topk', { losses: [3, 2.4, 2.1], ept: 1 }), 1), withShared(run('dynmoe', { losses: [3, 2.4, 2.1], ept: 3 }), 1)];
  const page = renderReport(results(runs, undefined, 1));
  const section = page.slice(page.indexOf('id="routers"'), page.indexOf('id="curves"'));
  const row = (name: string) => section.slice(section.indexOf(`<tr data-router="${name}">`), section.indexOf('</tr>', section.indexOf(`<tr data-router="${name}">`)));
  assert.match(row('topk'), /<td class="num">1\.00<\/td>\s*<td class="num">1\.00×<\/td>/);
  // 3 routed + 1 shared against 1 + 1: twice the FFN compute, not 3x
  assert.match(row('dynmoe'), /<td class="num">3\.00<\/td>\s*<td class="num">2\.00×<\/td>/);
});

test('every registered router gets its own row with its paper when it ran', () => {
  const names = routerRegistry.names();
  assert.ok(names.length >= 30, `${names.length} routers registered`);
  const runs = [run('dense', { kind: 'dense', losses: [3, 2.5, 2.2] }), ...names.map((n, i) => run(n, { losses: [3, 2.5, 2.2 + i * 1e-3], ept: 2 }))];
  const page = renderReport(results(runs));
  const section = page.slice(page.indexOf('id="routers"'), page.indexOf('id="curves"'));
  for (const n of names) {
    const i = section.indexOf(`<tr data-router="${n}">`);
    assert.ok(i >= 0, `${n} has a row`);
    const spec = routerRegistry.spec(n);
    if (spec.paper) assert.ok(section.slice(i, section.indexOf('</tr>', i)).includes(String(spec.paper.year)), `${n}'s row cites its paper`);
  }
});
