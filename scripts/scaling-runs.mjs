// The scaling suite's runs one at a time, resumable: node scripts/scaling-runs.mjs OUT.jsonl SEEDS [JOBS]
// (after `npm run build`). JOBS is a comma-separated list of granularities and/or `dense` (default: dense,1,2,4,8),
// run in that order for each seed. Appends one row per run in the suite's row format (bench/suites/scaling.ts), rows
// already in OUT are skipped; `node scripts/scaling-report.mjs OUT.jsonl DIR` gives the suite's table and SVG plot.
// Same configs as `npm run bench -- scaling` (suiteConfig + granularConfig, Shakespeare; dense as in the train bench),
// native backend, 1 thread.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { initBackend } from '../dist/src/kernels/index.js';
import { readJsonl } from './jsonl.mjs';
import { train } from '../dist/src/train/trainer.js';
import { suiteConfig } from '../dist/bench/suites/train.js';
import { scalingJobs, scalingRow } from '../dist/bench/suites/scaling.js';

const [outFile, seedList, jobList = 'dense,1,2,4,8'] = process.argv.slice(2);
if (!outFile || !seedList) throw new Error('usage: scaling-runs.mjs OUT.jsonl SEEDS [JOBS: dense,1,2,4,8]');
const jobs = jobList.split(',').map((j) => (j === 'dense' ? 0 : Number(j)));
if (jobs.some((g) => !Number.isInteger(g) || g < 0)) throw new Error(`scaling-runs: JOBS must be granularities or dense, got ${jobList}`);
const done = readJsonl(outFile);
const b = await initBackend(process.env.MOE_BACKEND ?? 'native', { threads: Number(process.env.THREADS ?? 1) });
for (const seed of seedList.split(',').map(Number)) {
  const base = suiteConfig(false, ['shakespeare'], seed);
  for (const g of jobs) {
    const label = g ? 'moe' : 'dense';
    if (done.some((r) => r.model === label && r.seed === seed && (g === 0 || r.granularity === g))) continue;
    const [, , c] = scalingJobs(base, g ? [g] : []).find((j) => j[1] === g);
    const out = fs.mkdtempSync(path.join(os.tmpdir(), 'moe-ts-scaling-'));
    const load0 = os.loadavg()[0];
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    const r = await train({ config: c, outDir: out });
    const cpu = process.cpuUsage(c0);
    const row = {
      ...scalingRow(label, g, c, seed, r, cpu),
      backend: `${b.name}/${b.threads}`,
      seconds: Math.round((performance.now() - t0) / 100) / 10,
      load: [load0, os.loadavg()[0]].map((x) => Number(x.toFixed(2))),
    };
    fs.appendFileSync(outFile, JSON.stringify(row) + '\n');
    console.log(`${label}${g ? ` g=${g}` : ''} seed ${seed}: val ${row.valLoss}, ${row.cpuS} cpu s, ${row.seconds} wall s, load ${row.load}`);
    fs.rmSync(out, { recursive: true, force: true });
  }
}
process.exit(0);
