// The train bench's report tables from rows written by scripts/train-bench-runs.mjs:
// node scripts/train-bench-report.mjs RUNS.jsonl [MORE.jsonl ...] [DENSE_LABEL [MOE_LABEL]] (after `npm run build`).
// Rows of all files are pooled (a row seen twice, same dataset/model/seed, counts once). DENSE_LABEL (e.g. dense@0.006)
// compares against those rows instead of the same-lr dense ones, MOE_LABEL (e.g. moe@0.015) likewise for the MoE side.
import * as fs from 'node:fs';
import { report } from '../dist/bench/suites/train.js';

const args = process.argv.slice(2);
const files = args.filter((a) => a.endsWith('.jsonl'));
const [denseLabel = 'dense', moeLabel = 'moe'] = args.filter((a) => !a.endsWith('.jsonl'));
if (files.length === 0) throw new Error('usage: train-bench-report.mjs RUNS.jsonl [MORE.jsonl ...] [DENSE_LABEL [MOE_LABEL]]');
const seen = new Set();
const rows = files
  .flatMap((file) => fs.readFileSync(file, 'utf8').split('\n').filter(Boolean))
  .map((l) => JSON.parse(l))
  .filter((r) => {
    const key = `${r.kind}|${r.dataset}|${r.model}|${r.seed}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return r.model === moeLabel || r.model === denseLabel;
  })
  .map((r) => ({ ...r, model: r.model === denseLabel ? 'dense' : 'moe' }));
console.log(`MoE rows: ${moeLabel}; dense rows: ${denseLabel}`);
for (const r of rows) console.log(`${r.dataset} ${r.model} seed ${r.seed}: val ${r.valLoss} (lr ${r.lr}, ${r.cpuS} cpu s, load ${r.load})`);
for (const t of report(rows)) {
  console.log(`\n${t.title}`);
  console.log(`| ${t.columns.map((c) => c.header).join(' | ')} |`);
  console.log(`|${t.columns.map(() => '---').join('|')}|`);
  for (const r of t.rows) console.log(`| ${t.columns.map((c) => String(r[c.key] ?? '')).join(' | ')} |`);
}
