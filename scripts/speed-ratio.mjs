// Interleaved MoE / dense training tokens/s at the train bench's default setup (the speed part of
// `npm run bench -- train` alone). After `npm run build`:
//   node scripts/speed-ratio.mjs [reps=20] [backend=native] [threads=1]
// Prints one JSON line with the load average before and after (the ratio is robust to load, the
// absolute tokens/s are not).
import * as os from 'node:os';
import { interleavedSpeed, suiteConfig } from '../dist/bench/suites/train.js';
import { initBackend, disposeBackend } from '../dist/src/kernels/index.js';
import { SharedExperts } from '../dist/src/moe/experts/ffn.js';

const reps = Number(process.argv[2] ?? 20);
const backend = process.argv[3] ?? 'native';
const threads = Number(process.argv[4] ?? 1);
// UNFUSED=1: the shared experts as a separate FFN (the path before they joined the grouped expert op), for A/B
if (process.env.UNFUSED === '1') SharedExperts.prototype.fusedWith = () => null;
const b = await initBackend(backend, { threads });
const load0 = os.loadavg()[0];
const cfg = suiteConfig(false, ['shakespeare'], 1234);
const sp = interleavedSpeed(cfg.model, cfg.training.batch_size, cfg.training.seq_len, reps, 1234);
const load1 = os.loadavg()[0];
disposeBackend();
console.log(
  JSON.stringify({
    backend: `${b.name}/${b.threads}`,
    reps,
    moe: Math.round(sp.moe),
    dense: Math.round(sp.dense),
    ratio: Number((sp.moe / sp.dense).toFixed(3)),
    load: [Number(load0.toFixed(1)), Number(load1.toFixed(1))],
  }),
);
