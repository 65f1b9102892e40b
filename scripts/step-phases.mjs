// Per-phase time (forward, backward, clip + AdamW) of interleaved training steps, MoE vs matched
// dense at the train bench's default setup; min and median over reps. After `npm run build`:
//   node scripts/step-phases.mjs [reps=12]     (CPU=1: CPU time instead of wall time; ONLY=moe|dense: one model)
import * as os from 'node:os';
import { suiteConfig } from '../dist/bench/suites/train.js';
import { initBackend, disposeBackend } from '../dist/src/kernels/index.js';
import { parseModelConfig, matchedDenseConfig } from '../dist/src/models/config.js';
import { MoETransformerLM, lmLoss } from '../dist/src/models/transformer.js';
import { AdamW, clipGradNorm } from '../dist/src/nn/index.js';
import { Rng } from '../dist/src/tensor/random.js';

const reps = Number(process.argv[2] ?? 12);
await initBackend('native', { threads: 1 });
const cfg = suiteConfig(false, ['shakespeare'], 1234);
const B = cfg.training.batch_size;
const S = cfg.training.seq_len;
const rng = new Rng(1);
const inputs = new Int32Array(B * S).map(() => Math.floor(rng.next() * cfg.model.vocab_size));
const targets = new Int32Array(B * S).map(() => Math.floor(rng.next() * cfg.model.vocab_size));
const which = process.env.ONLY === 'moe' ? [cfg.model] : process.env.ONLY === 'dense' ? [matchedDenseConfig(cfg.model)] : [cfg.model, matchedDenseConfig(cfg.model)];
const models = which.map((c) => {
  const m = new MoETransformerLM(parseModelConfig(c), 1);
  m.train();
  const params = m.parameters();
  return { m, params, opt: new AdamW(params, { lr: 1e-3 }), t: { fwd: [], bwd: [], opt: [], all: [] } };
});
// CPU=1: process CPU time (user + system, all threads: GC helpers included) instead of wall time, steadier under load
const now =
  process.env.CPU === '1'
    ? () => {
        const u = process.cpuUsage();
        return (u.user + u.system) / 1000;
      }
    : () => performance.now();
for (let r = 0; r < reps + 2; r++) {
  for (const i of models.length === 1 ? [0] : r % 2 ? [1, 0] : [0, 1]) {
    const { m, params, opt, t } = models[i];
    const t0 = now();
    const res = m.forward(inputs, B, S, { ctx: { training: true, step: r, totalSteps: 1000, rng }, dropoutRng: rng });
    const { loss } = lmLoss(res, targets);
    loss.item();
    const t1 = now();
    loss.backward();
    const t2 = now();
    clipGradNorm(params, 1);
    opt.step();
    opt.zeroGrad();
    m.afterStep();
    const t3 = now();
    if (r >= 2) {
      t.fwd.push(t1 - t0);
      t.bwd.push(t2 - t1);
      t.opt.push(t3 - t2);
      t.all.push(t3 - t0);
    }
  }
}
const med = (a) => a.slice().sort((p, q) => p - q)[a.length >> 1];
const f = (t) => Object.fromEntries(Object.entries(t).map(([k, v]) => [k, `${Math.min(...v).toFixed(0)}/${med(v).toFixed(0)}`]));
console.log(
  JSON.stringify({
    B,
    S,
    reps,
    [`${process.env.ONLY ?? 'moe'} min/median ms`]: f(models[0].t),
    ...(models[1] ? { 'dense min/median ms': f(models[1].t) } : {}),
    ratio: models.length === 2 ? Number((med(models[1].t.all) / med(models[0].t.all)).toFixed(3)) : null,
    clock: process.env.CPU === '1' ? 'cpu' : 'wall',
    load: os.loadavg()[0].toFixed(1),
  }),
);
disposeBackend();
