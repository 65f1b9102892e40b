// Seed study for docs/results.md: node scripts/train-seeds.mjs NAME 'JSON overrides' SEEDS [dense] >> runs/seeds.jsonl
// Trains the `train` defaults merged with the overrides ({model, training, data} partials) for each seed
// (comma-separated); with "dense", matchedDenseConfig of that model. One JSON line per run: final
// validation loss, eval curve, and every 20 steps the mean loss, max grad norm, load CV, max/mean load,
// router entropy and aux losses, to see where a bad seed goes wrong. Finished NAME/seed pairs are not skipped.
import { initBackend } from '../dist/src/kernels/index.js';
import { parseRunConfig, matchedDenseConfig } from '../dist/src/models/config.js';
import { train } from '../dist/src/train/trainer.js';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
const [name, overridesJson, seedList, denseFlag] = process.argv.slice(2);
const ov = JSON.parse(overridesJson || '{}');
await initBackend(process.env.MOE_BACKEND ?? 'native', { threads: Number(process.env.THREADS ?? 1) });
for (const seed of seedList.split(',').map(Number)) {
  const base = parseRunConfig({});
  let cfg = parseRunConfig({
    model: { ...base.model, ...ov.model },
    training: { ...base.training, save_interval: 100000, eval_interval: 40, ...ov.training, seed },
    data: { ...base.data, ...ov.data },
  });
  if (denseFlag === 'dense') cfg = { ...cfg, model: matchedDenseConfig(cfg.model) };
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'seeds-'));
  const windows = [];
  let w = null;
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const tps = [];
  const r = await train({
    config: cfg,
    outDir: out,
    events: {
      onStep: (m) => {
        tps.push(m.tokensPerSec);
        if (!w) w = { step: m.step, n: 0, loss: 0, gmax: 0, cv: 0, mom: 0, ent: 0, aux: {} };
        w.n++;
        w.loss += m.loss;
        w.gmax = Math.max(w.gmax, m.gradNorm);
        w.cv += m.loadCV || 0;
        w.mom += m.maxOverMean || 0;
        w.ent += m.routerEntropy || 0;
        for (const [k, v] of Object.entries(m.aux)) w.aux[k] = (w.aux[k] ?? 0) + v;
        if (m.step % 20 === 0) {
          const f = (x) => +(x / w.n).toFixed(4);
          windows.push({
            to: m.step,
            loss: f(w.loss),
            gmax: +w.gmax.toFixed(3),
            cv: f(w.cv),
            maxOverMean: f(w.mom),
            ent: f(w.ent),
            aux: Object.fromEntries(Object.entries(w.aux).map(([k, v]) => [k, f(v)])),
          });
          w = null;
        }
      },
    },
  });
  const cpu = process.cpuUsage(c0);
  tps.sort((a, b) => a - b);
  const rec = {
    name,
    dense: denseFlag === 'dense',
    seed,
    val: +r.finalEval.loss.toFixed(5),
    domains: r.finalEval.domains,
    curve: r.history.map((h) => [h.step, h.tokensSeen, +h.result.loss.toFixed(4)]),
    windows,
    tps: Math.round(tps[tps.length >> 1]),
    cpuS: +((cpu.user + cpu.system) / 1e6).toFixed(1),
    wallS: +((performance.now() - t0) / 1000).toFixed(1),
    load: os.loadavg().map((x) => +x.toFixed(2)),
    overrides: ov,
  };
  console.log(JSON.stringify(rec));
  fs.rmSync(out, { recursive: true, force: true });
}
process.exit(0);
