import { test } from 'node:test';
import assert from 'node:assert/strict';
import { html, raw, join, jsonScript, richText, escapeHtml } from '../../src/bench-routers/report/template.js';
import { renderReport } from '../../src/bench-routers/report/html.js';
import { analyseRuns } from '../../src/bench-routers/summary.js';
import type { BenchResults } from '../../src/bench-routers/types.js';
import { results, run, SPECIALISED } from './fixtures.js';

const HOSTILE = [
  '<script>alert(1)</script>',
  '"><img src=x onerror=alert(2)>',
  "' onmouseover='alert(3)",
  '</script><script>alert(4)</script>',
  '`${alert(5)}`',
  '<svg onload=alert(6)>',
  '&lt;already&gt;',
];

test('the html template escapes every interpolation unless marked safe', () => {
  const bad = HOSTILE[1];
  assert.equal(html`<p title="${bad}">${bad}</p>`.value, '<p title="&quot;&gt;&lt;img src=x onerror=alert(2)&gt;">&quot;&gt;&lt;img src=x onerror=alert(2)&gt;</p>');
  assert.equal(html`<a>${"x' y"}</a>`.value, '<a>x&#39; y</a>');
  assert.equal(html`<i>${['<a>', html`<b>${'<c>'}</b>`, null, undefined, false, 0]}</i>`.value, '<i>&lt;a&gt;<b>&lt;c&gt;</b>0</i>');
  assert.equal(html`${raw('<em>ok</em>')}`.value, '<em>ok</em>');
  assert.equal(join(['<a>', '<b>'], ', ').value, '&lt;a&gt;, &lt;b&gt;');
  assert.equal(richText('use **<x>**').value, 'use <strong>&lt;x&gt;</strong>');
  assert.equal(escapeHtml('&lt;'), '&amp;lt;');
  const js = jsonScript('d', { s: '</script><script>alert(1)</script>', u: '\u2028' }).value;
  assert.ok(!js.slice(0, -'</script>'.length).includes('</script'), js);
  assert.deepEqual(JSON.parse(js.replace(/^<script[^>]*>/, '').replace(/<\/script>$/, '')), { s: '</script><script>alert(1)</script>', u: '\u2028' });
});

/** A results.json as a hostile or careless editor could leave it: every string field carries markup. */
function hostileResults(): BenchResults {
  const h = (i: number): string => HOSTILE[i % HOSTILE.length];
  const runs = [
    run('dense', { kind: 'dense', losses: [3, 2.5] }),
    run(`topk${h(0)}`, { losses: [3, 2.0], usage: [SPECIALISED] }),
    run(`sw${h(1)}`, { losses: [3, 2.1], usage: [SPECIALISED], ept: 5 }),
    { ...run(`x${h(2)}`, { losses: [9, 9] }), status: 'diverged' as const, error: h(3), final: null },
  ];
  runs[1].description = h(4);
  runs[1].model.router_type = h(5);
  runs[2].description = h(6);
  const domains = [`shakespeare${h(0)}`, h(1), h(3)];
  for (const r of runs) {
    for (const c of r.curve) c.domains = Object.fromEntries(domains.map((d) => [d, c.loss]));
    if (r.final) r.final.domains = domains.map((d) => ({ domain: d, loss: r.final!.loss, perplexity: 1, tokens: 1 }));
  }
  const base = results(runs, { loss: 3.3, domains: Object.fromEntries(domains.map((d) => [d, 3.3])) });
  const res: BenchResults = { ...base, domains, createdAt: h(3), backend: h(1), format: h(0) as BenchResults['format'], seeds: [1] };
  res.config = { ...res.config, model: { ...(res.config.model as object), hidden_size: h(1) }, training: { ...(res.config.training as object), schedule: h(2), lr: h(0) } };
  // the reused file's analysis is what gets rendered, recommendation sentences included
  res.analysis = { ...analyseRuns(runs, { topK: 2, baseline: res.baseline }) };
  res.analysis.recommendation = [...res.analysis.recommendation, `**Recommendation:** ${h(0)} **${h(1)}**`];
  return res;
}

test('hostile strings from a reused bench.json inject nothing into the report', () => {
  const page = renderReport(hostileResults());
  const json = page.match(/<script id="raw-results" type="application\/json">([\s\S]*?)<\/script>/);
  assert.ok(json, 'the raw JSON island is intact');
  const body = page.replace(json[0], '');
  // no element or attribute from the data: the only tags are the report's own
  assert.ok(!/<script/i.test(body), 'no script element outside the JSON island');
  for (const tag of ['<img', '<svg onload']) assert.ok(!body.includes(tag), `${tag} injected`);
  assert.ok(!/\sonerror=/i.test(body.replace(/&quot;&gt;&lt;img src=x onerror=alert\(2\)&gt;/g, '')), 'no onerror attribute');
  assert.ok(!/\sonmouseover=/i.test(body.replace(/&#39; onmouseover=&#39;alert\(3\)/g, '').replace(/' onmouseover='alert\(3\)/g, (m) => m)), 'no onmouseover attribute');
  // every attribute value in the page is one well-formed quoted string: no quote from the data closes one early
  for (const m of body.matchAll(/<([a-zA-Z][\w:-]*)((?:\s+[\w:-]+(?:="[^"]*")?)*)\s*\/?>/g)) {
    for (const attr of m[2].matchAll(/\s+([\w:-]+)(?:="[^"]*")?/gy)) assert.ok(!/^on/i.test(attr[1]), `event handler attribute ${attr[1]} on <${m[1]}>`);
  }
  // the escaped text is there, so the values were shown, not dropped
  assert.ok(body.includes('topk&lt;script&gt;alert(1)&lt;/script&gt;'));
  assert.ok(body.includes('&lt;/script&gt;&lt;script&gt;alert(4)&lt;/script&gt;'));
  assert.ok(body.includes('&amp;lt;already&amp;gt;'), 'double-escaped: an entity in the data stays text');
  // the embedded JSON cannot end its script element early, and round-trips
  assert.ok(!json[1].includes('</script'));
  assert.deepEqual(JSON.parse(json[1]).runs[1].name, `topk${HOSTILE[0]}`);
});

test('the hostile report in headless Chromium: no script runs, no injected element exists', async (t) => {
  const { launchChromium } = await import('../helpers/chromium.js');
  const b = await launchChromium();
  if (!b) {
    t.skip('no Chromium (/usr/bin/chromium or CHROMIUM_PATH)');
    return;
  }
  try {
    const page = await b.ctx.newPage();
    const dialogs: string[] = [];
    const errors: string[] = [];
    page.on('dialog', (d) => {
      dialogs.push(d.message());
      void d.dismiss();
    });
    page.on('pageerror', (e) => errors.push(e.message));
    await page.setContent(renderReport(hostileResults()), { waitUntil: 'load' });
    await page.mouse.move(300, 300);
    const found = {
      scripts: await page.locator('script').count(),
      imgs: await page.locator('img').count(),
      handlers: await page.$$eval('*', (els) => els.flatMap((e) => [...e.attributes].filter((a) => a.name.startsWith('on')).map((a) => `${e.tagName}.${a.name}`))),
      title: await page.title(),
    };
    assert.deepEqual(dialogs, []);
    assert.deepEqual(errors, []);
    assert.equal(found.scripts, 1, 'only the JSON island');
    assert.equal(found.imgs, 0);
    assert.deepEqual(found.handlers, []);
    assert.match(found.title, /<script>alert\(1\)<\/script>/, 'shown as text');
  } finally {
    await b.close();
  }
});
