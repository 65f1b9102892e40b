// The train bench's runs one at a time, resumable: node scripts/train-bench-runs.mjs OUT.jsonl DATASET MODEL SEEDS [LR]
// (after `npm run build`). DATASET is a name in DATASETS of bench/suites/train.ts, MODEL moe or dense, SEEDS
// comma-separated; LR overrides training.lr (an lr sweep, e.g. dense at its own rate; the row's model becomes
// moe@LR or dense@LR).
// Appends one row per run in the suite's row format, so scripts/train-bench-report.mjs gives the suite's own
// statistics; rows already in OUT are skipped. Same config as `npm run bench -- train` (suiteConfig), 1 thread.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { initBackend } from '../dist/src/kernels/index.js';
import { readJsonl } from './jsonl.mjs';
import { parseRunConfig } from '../dist/src/models/config.js';
import { train } from '../dist/src/train/trainer.js';
import { DATASETS, denseSuiteConfig, suiteConfig } from '../dist/bench/suites/train.js';

const [outFile, dsName, model, seedList, lrArg] = process.argv.slice(2);
const ds = DATASETS.find((d) => d.name === dsName);
if (!ds || !['moe', 'dense'].includes(model) || !seedList) throw new Error('usage: OUT.jsonl DATASET(shakespeare|mix) MODEL(moe|dense) SEEDS [LR]');
const label = lrArg ? `${model}@${lrArg}` : model;
const done = readJsonl(outFile);
const b = await initBackend(process.env.MOE_BACKEND ?? 'native', { threads: Number(process.env.THREADS ?? 1) });
for (const seed of seedList.split(',').map(Number)) {
  if (done.some((r) => r.dataset === dsName && r.model === label && r.seed === seed)) continue;
  let cfg = suiteConfig(false, ds.sources, seed);
  if (model === 'dense') cfg = denseSuiteConfig(cfg);
  if (lrArg) cfg = parseRunConfig({ ...cfg, training: { ...cfg.training, lr: Number(lrArg) } });
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'moe-ts-train-bench-'));
  const tps = [];
  const load0 = os.loadavg()[0];
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const r = await train({ config: cfg, outDir: out, events: { onStep: (m) => tps.push(m.tokensPerSec) } });
  const cpu = process.cpuUsage(c0);
  tps.sort((x, y) => x - y);
  const row = {
    kind: 'run',
    dataset: dsName,
    model: label,
    seed,
    backend: `${b.name}/${b.threads}`,
    steps: r.steps,
    tokens: r.steps * cfg.training.batch_size * cfg.training.seq_len,
    params: r.params,
    activeParams: r.activeParams,
    lr: cfg.training.lr,
    valLoss: Number(r.finalEval.loss.toFixed(5)),
    domains: r.finalEval.domains,
    tokensPerS: Math.round(tps[tps.length >> 1]),
    cpuS: Math.round((cpu.user + cpu.system) / 1e5) / 10,
    seconds: Math.round((performance.now() - t0) / 100) / 10,
    load: [load0, os.loadavg()[0]].map((x) => Number(x.toFixed(2))),
    curve: r.history.map((h) => ({ step: h.step, tokens: h.tokensSeen, loss: Number(h.result.loss.toFixed(5)) })),
  };
  fs.appendFileSync(outFile, JSON.stringify(row) + '\n');
  console.log(`${dsName} ${label} seed ${seed}: val ${row.valLoss}, ${row.cpuS} cpu s, ${row.seconds} wall s, load ${row.load}`);
  fs.rmSync(out, { recursive: true, force: true });
}
process.exit(0);
