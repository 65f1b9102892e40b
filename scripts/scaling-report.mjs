// The scaling suite's table and SVG plot from rows written by scripts/scaling-runs.mjs:
// node scripts/scaling-report.mjs RUNS.jsonl [PLOT_DIR] (after `npm run build`); the plot goes to PLOT_DIR/scaling.svg.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { report, scalingChart } from '../dist/bench/suites/scaling.js';

const [file, plotDir] = process.argv.slice(2);
if (!file) throw new Error('usage: scaling-report.mjs RUNS.jsonl [PLOT_DIR]');
const rows = fs
  .readFileSync(file, 'utf8')
  .split('\n')
  .filter(Boolean)
  .map((l) => JSON.parse(l));
for (const r of rows)
  console.log(`${r.model}${r.granularity ? ` g=${r.granularity} (${r.experts} x ${r.width}, top-${r.topK})` : ''} seed ${r.seed}: val ${r.valLoss} (${r.cpuS} cpu s, load ${r.load})`);
for (const t of report(rows)) {
  console.log(`\n${t.title}`);
  console.log(`| ${t.columns.map((c) => c.header).join(' | ')} |`);
  console.log(`|${t.columns.map(() => '---').join('|')}|`);
  for (const r of t.rows) console.log(`| ${t.columns.map((c) => String(r[c.key] ?? '')).join(' | ')} |`);
}
if (plotDir) {
  fs.mkdirSync(plotDir, { recursive: true });
  fs.writeFileSync(path.join(plotDir, 'scaling.svg'), scalingChart(rows));
  console.log(`\nplot: ${path.join(plotDir, 'scaling.svg')}`);
}
