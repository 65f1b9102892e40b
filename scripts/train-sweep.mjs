// The docs/results.md sweep: node scripts/train-sweep.mjs scripts/train-sweep-jobs.json runs/sweep.jsonl (after npm run build).
// Each job is {name, dense?, config}: dense trains matchedDenseConfig(config.model). Finished names in the output file are skipped.
import * as fs from 'node:fs';
import { readJsonl } from './jsonl.mjs';
import * as os from 'node:os';
import * as path from 'node:path';
import { initBackend } from '../dist/src/kernels/index.js';
import { parseRunConfig, matchedDenseConfig } from '../dist/src/models/config.js';
import { train } from '../dist/src/train/trainer.js';
const jobs = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const outFile = process.argv[3];
const done = new Set(readJsonl(outFile).map((r) => r.name));
await initBackend(process.env.MOE_BACKEND ?? 'auto', { threads: 1 });
for (const j of jobs) {
  if (done.has(j.name)) continue;
  let cfg = parseRunConfig(j.config);
  if (j.dense) cfg = { ...cfg, model: matchedDenseConfig(cfg.model) };
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'sweep2-'));
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  let r;
  try {
    r = await train({ config: cfg, outDir: out });
  } catch (e) {
    fs.appendFileSync(outFile, JSON.stringify({ name: j.name, error: String(e) }) + '\n');
    continue;
  }
  const cpu = process.cpuUsage(c0);
  const rec = {
    name: j.name,
    dense: !!j.dense,
    val: +r.finalEval.loss.toFixed(4),
    domains: r.finalEval.domains,
    curve: r.history.map((h) => [h.step, +h.result.loss.toFixed(4)]),
    tps: Math.round(r.tokensPerSec),
    cpuS: +((cpu.user + cpu.system) / 1e6).toFixed(1),
    wallS: +((performance.now() - t0) / 1000).toFixed(1),
    params: r.params,
    active: r.activeParams,
  };
  fs.appendFileSync(outFile, JSON.stringify(rec) + '\n');
  console.log(JSON.stringify({ ...rec, curve: undefined, domains: undefined }));
  fs.rmSync(out, { recursive: true, force: true });
}
process.exit(0);
