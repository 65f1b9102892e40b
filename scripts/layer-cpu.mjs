// CPU time (process.cpuUsage) of one MoE layer's forward+backward at the train default vs the
// matched dense FFN, and of the router path alone (route + losses + metrics). After `npm run build`:
//   node scripts/layer-cpu.mjs [reps=30] [tokens=2048]
import * as os from 'node:os';
import { initBackend, disposeBackend } from '../dist/src/kernels/index.js';
import { parseModelConfig, RunConfigSchema, matchedDenseConfig } from '../dist/src/models/config.js';
import { MoETransformerLM } from '../dist/src/models/transformer.js';
import { Tensor } from '../dist/src/tensor/tensor.js';
import { Rng } from '../dist/src/tensor/random.js';
import { computeRoutingMetrics } from '../dist/src/moe/metrics.js';
import { lossRegistry } from '../dist/src/moe/losses/index.js';
import { add, sum } from '../dist/src/tensor/index.js';

const reps = Number(process.argv[2] ?? 30);
const T = Number(process.argv[3] ?? 2048);
await initBackend('native', { threads: 1 });
const moeCfg = RunConfigSchema.parse({}).model;
const mm = new MoETransformerLM(parseModelConfig(moeCfg), 1);
const dm = new MoETransformerLM(parseModelConfig(matchedDenseConfig(moeCfg)), 1);
const moe = mm.layers[0].block_sparse_moe;
const ffn = dm.layers[0].mlp;
const rng = new Rng(3);
const d = moeCfg.hidden_size;
const xd = rng.fillNormal(new Float32Array(T * d), 1);
const ctx = { training: true, step: 0, rng };
const cpu = (f) => {
  const c = process.cpuUsage();
  f();
  const e = process.cpuUsage(c);
  return (e.user + e.system) / 1000;
};
const lossOf = (y, aux) => {
  let l = sum(y);
  if (aux) for (const v of Object.values(aux.losses)) l = add(l, v);
  return l;
};
const cases = {
  moe: () => {
    const x = new Tensor(xd.slice(), [T, d]);
    x.requiresGrad = true;
    const r = moe.forward(x, ctx);
    lossOf(r.y, r.aux).backward();
  },
  dense: () => {
    const x = new Tensor(xd.slice(), [T, d]);
    x.requiresGrad = true;
    lossOf(ffn.forward(x)).backward();
  },
  router: () => {
    const x = new Tensor(xd.slice(), [T, d]);
    x.requiresGrad = true;
    const out = moe.route(x, ctx);
    let l = sum(out.routing.weights);
    for (const n of Object.keys(moe.config.losses ?? {})) l = add(l, lossRegistry.get(n)(out, { numExperts: 8, tokens: T, topK: 1 }));
    computeRoutingMetrics(out, 8, T);
    l.backward();
  },
};
console.log('losses', JSON.stringify(moe.config.losses), 'router', JSON.stringify(moe.config.router));
if (process.env.ONLY) for (const k of Object.keys(cases)) if (k !== process.env.ONLY) delete cases[k];
const times = Object.fromEntries(Object.keys(cases).map((k) => [k, []]));
for (let r = 0; r < reps + 3; r++)
  for (const [k, f] of Object.entries(cases)) {
    const t = cpu(f);
    if (r >= 3) times[k].push(t);
  }
const med = (a) => a.slice().sort((p, q) => p - q)[a.length >> 1];
const min = (a) => Math.min(...a);
// min: the least load-disturbed sample (the median is printed too)
const res = Object.fromEntries(Object.entries(times).map(([k, v]) => [k, Number(min(v).toFixed(2))]));
const resMed = Object.fromEntries(Object.entries(times).map(([k, v]) => [k, Number(med(v).toFixed(2))]));
console.log(
  JSON.stringify({
    T,
    reps,
    minCpuMs: res,
    medianCpuMs: resMed,
    moeOverDense: Number((res.moe / res.dense).toFixed(3)),
    routerOverDense: Number((res.router / res.dense).toFixed(3)),
    load: os.loadavg()[0].toFixed(1),
  }),
);
disposeBackend();
