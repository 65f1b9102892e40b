// The train bench's report tables from rows written by scripts/train-bench-runs.mjs:
// node scripts/train-bench-report.mjs RUNS.jsonl [DENSE_LABEL] (after `npm run build`). DENSE_LABEL (e.g. dense@0.006)
// compares the MoE against those rows instead of the same-lr dense ones.
import * as fs from 'node:fs';
import { report } from '../dist/bench/suites/train.js';

const [file, denseLabel = 'dense'] = process.argv.slice(2);
const rows = fs
  .readFileSync(file, 'utf8')
  .split('\n')
  .filter(Boolean)
  .map((l) => JSON.parse(l))
  .filter((r) => r.model === 'moe' || r.model === denseLabel)
  .map((r) => ({ ...r, model: r.model === denseLabel ? 'dense' : r.model }));
for (const r of rows) console.log(`${r.dataset} ${r.model} seed ${r.seed}: val ${r.valLoss} (lr ${r.lr}, ${r.cpuS} cpu s, load ${r.load})`);
for (const t of report(rows)) {
  console.log(`\n${t.title}`);
  console.log(`| ${t.columns.map((c) => c.header).join(' | ')} |`);
  console.log(`|${t.columns.map(() => '---').join('|')}|`);
  for (const r of t.rows) console.log(`| ${t.columns.map((c) => String(r[c.key] ?? '')).join(' | ')} |`);
}
