// The fused SwiGLU expert op at the train default (T = 2048 tokens, d 64, 8 experts of 128, top-1,
// plus the shared expert as group 8) against the matched dense SwiGLU FFN (width 256): the whole op
// forward+backward, and each GEMM of both alone, interleaved; min and median ms. After `npm run build`:
//   node scripts/expert-op-parts.mjs [reps=30]
import * as os from 'node:os';
import { initBackend, disposeBackend, getBackend } from '../dist/src/kernels/index.js';
import { Tensor, expertSwigluFFN, matmul, swiglu, sum } from '../dist/src/tensor/index.js';
import { Rng } from '../dist/src/tensor/random.js';
import { parseModelConfig, RunConfigSchema, matchedDenseConfig } from '../dist/src/models/config.js';
import { MoETransformerLM } from '../dist/src/models/transformer.js';
import { add } from '../dist/src/tensor/index.js';

const reps = Number(process.argv[2] ?? 30);
await initBackend('native', { threads: 1 });
const be = getBackend();
const T = 2048,
  d = 64,
  f = 128,
  E = 8,
  F = 256;
const rng = new Rng(5);
const rnd = (n, s = 0.1) => rng.fillNormal(new Float32Array(n), s);
const assign = Int32Array.from({ length: T }, () => Math.floor(rng.next() * E));
const sizes = new Int32Array(E);
for (const e of assign) sizes[e]++;
const rows = Int32Array.from([...assign.keys()].sort((a, b) => assign[a] - assign[b] || a - b));
const gsizes = Int32Array.from([...sizes, T]);
const R = 2 * T;
const xd = rnd(T * d, 1);
const P = (shape, s = 0.1) => {
  const t = new Tensor(
    rnd(
      shape.reduce((a, b) => a * b),
      s,
    ),
    shape,
  );
  t.requiresGrad = true;
  return t;
};
const w1 = P([E, d, f]),
  w3 = P([E, d, f]),
  w2 = P([E, f, d]);
const sw = { w1: P([d, f]), w3: P([d, f]), w2: P([f, d]) };
const wts = P([T], 1);
const dW1 = P([F, d]),
  dW3 = P([F, d]),
  dW2 = P([d, F]);
const A13 = rnd(R * d),
  W13 = rnd(9 * d * 2 * f),
  H13 = rnd(R * 2 * f),
  W2a = rnd(9 * f * d),
  ACT = rnd(R * f),
  GYS = rnd(R * d);
const X = rnd(T * d),
  Wd = rnd(F * d),
  H = rnd(T * F),
  G = rnd(T * d);
const moeCfg = RunConfigSchema.parse({}).model;
const layer = new MoETransformerLM(parseModelConfig(moeCfg), 1).layers[0].block_sparse_moe;
const dffn = new MoETransformerLM(parseModelConfig(matchedDenseConfig(moeCfg)), 1).layers[0].mlp;
const ctx = { training: true, step: 0, rng };
const lossOf = (y, aux) => {
  let l = sum(y);
  if (aux) for (const v of Object.values(aux.losses)) l = add(l, v);
  return l;
};
const cases = {
  moeLayer: () => {
    const x = new Tensor(xd.slice(), [T, d]);
    x.requiresGrad = true;
    const r = layer.forward(x, ctx);
    lossOf(r.y, r.aux).backward();
  },
  denseLayer: () => {
    const x = new Tensor(xd.slice(), [T, d]);
    x.requiresGrad = true;
    lossOf(dffn.forward(x)).backward();
  },
  moeOp: () => {
    const x = new Tensor(xd.slice(), [T, d]);
    x.requiresGrad = true;
    sum(expertSwigluFFN(x, rows, sizes, w1, w3, w2, wts, rows, sw)).backward();
  },
  denseFFN: () => {
    const x = new Tensor(xd.slice(), [T, d]);
    x.requiresGrad = true;
    sum(matmul(swiglu(matmul(x, dW1, { transB: true }), matmul(x, dW3, { transB: true })), dW2, { transB: true })).backward();
  },
  // the MoE op's GEMMs: forward x w13, act w2; backward gact = gys w2^T, gw2 = act^T gys, g13 = xs^T h13, gxs = h13 w13^T
  m_fwd13: () => be.groupedMatmul(A13, W13, gsizes, d, 2 * f, false),
  m_fwd2: () => be.groupedMatmul(ACT, W2a, gsizes, f, d, false),
  m_gact: () => be.groupedMatmul(GYS, W2a, gsizes, d, f, true),
  m_gw2: () => be.groupedMatmulTN(ACT, GYS, gsizes, f, d),
  m_g13: () => be.groupedMatmulTN(A13, H13, gsizes, d, 2 * f),
  m_gxs: () => be.groupedMatmul(H13, W13, gsizes, 2 * f, d, true),
  // dense: x W1^T and x W3^T (2x), h W2^T, backward gh = g W2, gW2 = g^T h, gW1/gW3 = gh^T x (2x), gx = gh W1 (2x)
  d_fwd1: () => be.matmul(X, Wd, T, d, F, { transB: true }),
  d_fwd2: () => be.matmul(H, Wd, T, F, d, { transB: true }),
  d_gh: () => be.matmul(G, Wd, T, d, F),
  d_gW2: () => be.matmul(G, H, d, T, F, { transA: true }),
  d_gW1: () => be.matmul(H, X, F, T, d, { transA: true }),
  d_gx: () => be.matmul(H, Wd, T, F, d),
};
const times = Object.fromEntries(Object.keys(cases).map((k) => [k, []]));
for (let r = 0; r < reps + 3; r++)
  for (const [k, fn] of Object.entries(cases)) {
    const t0 = performance.now();
    fn();
    if (r >= 3) times[k].push(performance.now() - t0);
  }
const med = (a) => a.slice().sort((p, q) => p - q)[a.length >> 1];
const out = Object.fromEntries(Object.entries(times).map(([k, v]) => [k, `${Math.min(...v).toFixed(2)}/${med(v).toFixed(2)}`]));
const m = (k) => Math.min(...times[k]);
const moeG = ['m_fwd13', 'm_fwd2', 'm_gact', 'm_gw2', 'm_g13', 'm_gxs'].reduce((s, k) => s + m(k), 0);
const denG = 2 * m('d_fwd1') + m('d_fwd2') + m('d_gh') + m('d_gW2') + 2 * m('d_gW1') + 2 * m('d_gx');
console.log(JSON.stringify({ reps, 'min/median ms': out, gemmSumMin: { moe: moeG.toFixed(2), dense: denG.toFixed(2) }, load: os.loadavg()[0].toFixed(1) }));
disposeBackend();
