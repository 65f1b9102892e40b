/**
 * Throughput check for the native backend (not a test: timings depend on the machine and its load).
 * Run: node dist/src/kernels/native/bench.js [threads...]   e.g. `... 1 2`
 * Variants are interleaved round by round so background load hits them alike; we report the
 * best and median round in GFLOP/s.
 */
import { pathToFileURL } from 'node:url';
import type { Backend } from '../../tensor/backend.js';
import { refMatmul } from '../js.js';
import { createNativeBackend } from './index.js';

type Case = [name: string, flops: number, run: () => void];

function rand(n: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = Math.random() - 0.5;
  return a;
}

/** Seconds per call for each case: best and median over rounds of >= minMs each. */
export function compare(cases: Case[], rounds = 9, minMs = 40): { name: string; best: number; median: number }[] {
  for (const [, , run] of cases) {
    run();
    run();
  }
  const per = cases.map(() => [] as number[]);
  for (let r = 0; r < rounds; r++) {
    cases.forEach(([, , run], i) => {
      let reps = 0;
      const t0 = performance.now();
      let t: number;
      do {
        run();
        reps++;
        t = performance.now() - t0;
      } while (t < minMs);
      per[i].push(t / reps / 1e3);
    });
  }
  return cases.map(([name], i) => {
    const s = per[i].sort((x, y) => x - y);
    return { name, best: s[0], median: s[s.length >> 1] };
  });
}

function report(title: string, cases: Case[], rounds?: number): void {
  const res = compare(cases, rounds);
  const parts = res.map((r, i) => {
    const f = cases[i][1];
    return `${r.name} ${(f / r.best / 1e9).toFixed(1)}/${(f / r.median / 1e9).toFixed(1)}`;
  });
  console.log(`${title}: ${parts.join(' | ')}  GFLOP/s best/median`);
}

function matmulCases(be: Backend): void {
  for (const [m, k, n] of [
    [512, 512, 2048],
    [64, 512, 2048],
    [2048, 2048, 2048],
  ]) {
    const a = rand(m * k);
    const b = rand(k * n);
    const out = new Float32Array(m * n);
    const f = 2 * m * k * n;
    report(
      `matmul ${m}x${k}x${n}`,
      [
        ['nn', f, () => be.matmul(a, b, m, k, n, { out })],
        ['tn', f, () => be.matmul(a, b, m, k, n, { out, transA: true })],
        ['nt+acc', f, () => be.matmul(a, b, m, k, n, { out, transB: true, accumulate: true })],
      ],
      m === 2048 ? 3 : 9,
    );
  }
}

function groupedCases(be: Backend): void {
  for (const [E, s, d, ffn] of [
    [8, 512, 512, 1024],
    [64, 64, 512, 128],
  ]) {
    const rows = E * s;
    const a = rand(rows * d);
    const w = rand(E * d * ffn);
    const g = rand(rows * ffn);
    const out = new Float32Array(rows * ffn);
    const f = 2 * rows * d * ffn;
    const balanced = new Int32Array(E).fill(s);
    // same total rows, uneven split (some experts empty) to exercise the multi-GEMM graph
    const uneven = new Int32Array(E);
    for (let e = 0; e < E; e++) uneven[e] = e % 4 === 3 ? 0 : e % 4 === 0 ? 2 * s : s;
    uneven[0] += rows - uneven.reduce((x, y) => x + y, 0);
    const w1 = w.subarray(0, d * ffn);
    report(`grouped E=${E} x ${s} tok, d=${d} ffn=${ffn}`, [
      ['plain', f, () => be.matmul(a, w1, rows, d, ffn, { out })],
      ['grouped', f, () => be.groupedMatmul(a, w, balanced, d, ffn)],
      ['uneven', f, () => be.groupedMatmul(a, w, uneven, d, ffn)],
      ['plainTN', f, () => be.matmul(a, g, d, rows, ffn, { transA: true, out: w1 })],
      ['TN', f, () => be.groupedMatmulTN(a, g, balanced, d, ffn)],
      ['TNuneven', f, () => be.groupedMatmulTN(a, g, uneven, d, ffn)],
    ]);
  }
}

/** Small cubes: ORT path (minFlops 0) against the js reference, to place the crossover. */
async function crossover(threads: number): Promise<void> {
  const be = await createNativeBackend({ threads, minFlops: 0 });
  try {
    for (const sz of [4, 8, 16, 24, 32, 48, 64]) {
      const a = rand(sz * sz);
      const b = rand(sz * sz);
      const out = new Float32Array(sz * sz);
      const f = 2 * sz * sz * sz;
      const res = compare(
        [
          ['ort', f, () => be.matmul(a, b, sz, sz, sz, { out })],
          ['js', f, () => refMatmul(a, b, sz, sz, sz, { out })],
        ],
        5,
        20,
      );
      console.log(`crossover ${sz}^3 (${f} flops): ort ${(res[0].best * 1e6).toFixed(1)} us, js ${(res[1].best * 1e6).toFixed(1)} us`);
    }
  } finally {
    be.dispose();
  }
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const threadList = args.filter((x) => /^\d+$/.test(x)).map(Number);
  const spinList = args.includes('nospin') ? [false] : args.includes('spin') ? [true] : [true, false];
  for (const threads of threadList.length ? threadList : [1, 2]) {
    for (const spinning of threads === 1 ? [false] : spinList) {
      console.log(`--- threads=${threads} spinning=${spinning}`);
      const be = await createNativeBackend({ threads, spinning });
      try {
        if (!args.includes('grouped')) matmulCases(be);
        if (!args.includes('matmul')) groupedCases(be);
      } finally {
        be.dispose();
      }
    }
  }
  if (args.includes('crossover')) await crossover(1);
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
