/**
 * Fine-grained expert scaling at fixed active FLOPs (Krajewski et al. 2024 "Scaling Laws for
 * Fine-Grained Mixture of Experts"; Dai et al. 2024 "DeepSeekMoE"): granularity g splits each of
 * the coarse E experts of width f into g experts of width f/g and routes each token to k*g of
 * them, so active FFN width (k*f) and total expert parameters stay fixed while the number of
 * expert combinations grows. Trains g = 1, 2, 4, 8 plus the FLOP-matched dense model on the same
 * data, seeds and tokens, and writes the loss per granularity as a table, JSON and an SVG plot
 * (ECharts server-side rendering) next to the JSON.
 */
import * as os from 'node:os';
import * as path from 'node:path';
import * as fs from 'node:fs';
import * as echarts from 'echarts';
import { initBackend, disposeBackend } from '../../src/kernels/index.js';
import { parseRunConfig, type RunConfig } from '../../src/models/config.js';
import { train } from '../../src/train/trainer.js';
import { writeFileAtomicSync } from '../../src/io/atomic.js';
import { welchDifference, tInterval, type Interval } from '../lib/stats.js';
import type { Column, Row, SuiteOptions, SuiteTable } from '../lib/suite.js';
import { COVERAGE, denseSuiteConfig, suiteConfig } from './train.js';

export const name = 'scaling';
export const description = 'fine-grained experts at fixed active FLOPs: granularity 1, 2, 4, 8 (E*g experts of width f/g, top k*g) vs dense; loss table + SVG plot';

export const GRANULARITIES = [1, 2, 4, 8];
/** The coarse layer that granularity 1 means: Switch/Mixtral-style 8 experts, top-2. */
export const COARSE_EXPERTS = 8;
export const COARSE_TOP_K = 2;
const SEEDS = 2;

export const columns: Column[] = [
  { key: 'model', header: 'model' },
  { key: 'granularity', header: 'g' },
  { key: 'experts', header: 'experts' },
  { key: 'topK', header: 'top-k' },
  { key: 'width', header: 'expert width' },
  { key: 'seed', header: 'seed' },
  { key: 'activeParams', header: 'active' },
  { key: 'params', header: 'params' },
  { key: 'valLoss', header: 'val loss' },
  { key: 'tokensPerS', header: 'tok/s' },
  { key: 'cpuS', header: 'cpu s' },
];

/**
 * The MoE at granularity g, built on the `train` defaults' model and data with the active FFN
 * width of the default MoE (k * f, plus shared experts, kept as they are).
 */
export function granularConfig(base: RunConfig, g: number): RunConfig {
  const m = base.model;
  const activeRouted = m.num_experts_per_tok * m.moe_intermediate_size;
  const coarseWidth = activeRouted / COARSE_TOP_K;
  if (!Number.isInteger(coarseWidth / g)) throw new Error(`scaling: active routed width ${activeRouted} does not split into ${COARSE_TOP_K * g} experts at granularity ${g}`);
  return parseRunConfig({
    ...base,
    model: {
      ...m,
      num_local_experts: COARSE_EXPERTS * g,
      num_experts_per_tok: COARSE_TOP_K * g,
      moe_intermediate_size: coarseWidth / g,
      expert_sizes: undefined,
      // shared experts keep their width (it defaults to moe_intermediate_size, which changes here)
      shared_expert_intermediate_size: m.n_shared_experts > 0 ? (m.shared_expert_intermediate_size ?? m.moe_intermediate_size) : m.shared_expert_intermediate_size,
    },
  });
}

/** The suite's runs for one seed: [label, granularity (0 for dense), config]; dense as in the train bench (denseSuiteConfig). */
export function scalingJobs(base: RunConfig, grans: readonly number[] = GRANULARITIES): [string, number, RunConfig][] {
  return [['dense', 0, denseSuiteConfig(granularConfig(base, 1))], ...grans.map((g) => ['moe', g, granularConfig(base, g)] as [string, number, RunConfig])];
}

/** One job's row (the suite's table and scripts/scaling-runs.mjs): g = 0 is the dense baseline; cpu is process.cpuUsage over the run. */
export function scalingRow(label: string, g: number, c: RunConfig, seed: number, r: Awaited<ReturnType<typeof train>>, cpu: NodeJS.CpuUsage): Row {
  return {
    model: label,
    granularity: g || '',
    experts: g ? c.model.num_local_experts : '',
    topK: g ? c.model.num_experts_per_tok : '',
    width: g ? c.model.moe_intermediate_size : c.model.intermediate_size,
    seed,
    steps: r.steps,
    params: r.params,
    activeParams: r.activeParams,
    lr: c.training.lr,
    valLoss: Number(r.finalEval.loss.toFixed(5)),
    tokensPerS: Math.round(r.tokensPerSec),
    cpuS: Math.round((cpu.user + cpu.system) / 1e5) / 10,
    curve: r.history.map((h) => ({ tokens: h.tokensSeen, loss: Number(h.result.loss.toFixed(5)) })),
  };
}

export async function run(opts: SuiteOptions): Promise<Row[]> {
  const seeds = opts.quick ? 1 : SEEDS;
  const grans = opts.quick ? [1, 2, 4] : GRANULARITIES;
  const backendName = opts.backends.includes('native') ? 'native' : (opts.backends[0] ?? 'auto');
  const rows: Row[] = [];
  await initBackend(backendName, { threads: Math.max(...opts.threads) });
  try {
    for (let s = 0; s < seeds; s++) {
      const seed = opts.seed + s;
      const base = suiteConfig(opts.quick, ['shakespeare'], seed);
      const jobs = scalingJobs(base, grans);
      for (const [label, g, c] of jobs) {
        const out = fs.mkdtempSync(path.join(os.tmpdir(), 'moe-ts-bench-scaling-'));
        opts.log(
          `scaling: ${label}${g ? ` g=${g} (${c.model.num_local_experts} experts of ${c.model.moe_intermediate_size}, top-${c.model.num_experts_per_tok})` : ''} seed ${seed}, ${c.training.steps} steps`,
        );
        const c0 = process.cpuUsage();
        try {
          const r = await train({ config: c, outDir: out });
          const cpu = process.cpuUsage(c0);
          rows.push(scalingRow(label, g, c, seed, r, cpu));
        } finally {
          fs.rmSync(out, { recursive: true, force: true });
        }
      }
    }
  } finally {
    disposeBackend();
  }
  if (opts.outDir) {
    const file = path.join(opts.outDir, 'scaling.svg');
    fs.mkdirSync(opts.outDir, { recursive: true });
    writeFileAtomicSync(file, scalingChart(rows));
    opts.log(`scaling: plot in ${file}`);
  }
  return rows;
}

export interface GranularityPoint {
  granularity: number;
  loss: Interval;
}

/** Mean loss (t interval over seeds) per granularity, and dense's. */
export function summarise(rows: readonly Row[], coverage = COVERAGE): { points: GranularityPoint[]; dense: Interval | null } {
  const loss = (r: Row): number => Number(r.valLoss);
  const grans = [...new Set(rows.filter((r) => r.model === 'moe').map((r) => Number(r.granularity)))].sort((a, b) => a - b);
  const points = grans.map((g) => ({ granularity: g, loss: tInterval(rows.filter((r) => r.model === 'moe' && Number(r.granularity) === g).map(loss), coverage) }));
  const d = rows.filter((r) => r.model === 'dense').map(loss);
  return { points, dense: d.length ? tInterval(d, coverage) : null };
}

/** Loss vs granularity (log2 axis), the t interval as a band when there are seeds to spread, dense as a dashed line. */
export function scalingChart(rows: readonly Row[], size = { width: 720, height: 400 }): string {
  const { points, dense } = summarise(rows);
  const xs = points.map((p) => p.granularity);
  const series: Record<string, unknown>[] = [
    { type: 'line', name: 'MoE (mean over seeds)', data: points.map((p) => [p.granularity, p.loss.mean]), symbolSize: 7, color: '#4e79a7', lineStyle: { width: 2 } },
  ];
  if (points.some((p) => Number.isFinite(p.loss.lo))) {
    for (const [key, label] of [
      ['lo', 'lower'],
      ['hi', 'upper'],
    ] as const) {
      series.push({
        type: 'line',
        name: `${Math.round(COVERAGE * 100)}% t interval`,
        data: points.map((p) => [p.granularity, p.loss[key]]),
        showSymbol: false,
        color: '#4e79a7',
        lineStyle: { width: 1, type: 'dotted' },
        id: label,
      });
    }
  }
  if (dense && xs.length) {
    series.push({
      type: 'line',
      name: 'dense (FLOP-matched)',
      data: [
        [xs[0], dense.mean],
        [xs[xs.length - 1], dense.mean],
      ],
      showSymbol: false,
      color: '#222222',
      lineStyle: { width: 2, type: 'dashed' },
    });
  }
  const chart = echarts.init(null, null, { renderer: 'svg', ssr: true, width: size.width, height: size.height });
  try {
    chart.setOption({
      animation: false,
      title: { text: 'Validation loss vs expert granularity at fixed active FLOPs', left: 'center', textStyle: { fontSize: 14 } },
      grid: { left: 70, right: 30, top: 50, bottom: 80 },
      legend: { bottom: 4, textStyle: { fontSize: 12 } },
      xAxis: { type: 'log', logBase: 2, name: 'granularity g (experts 8g of width f/g, top-2g)', nameLocation: 'middle', nameGap: 28, min: xs[0], max: xs[xs.length - 1] },
      yAxis: { type: 'value', name: 'validation loss (nats/token)', nameLocation: 'middle', nameGap: 52, scale: true, axisLabel: { formatter: (v: number) => `${+v.toFixed(3)}` } },
      series,
    });
    return chart.renderToSVGString();
  } finally {
    chart.dispose();
  }
}

export function report(rows: Row[]): SuiteTable[] {
  const { points, dense } = summarise(rows);
  if (points.length === 0) return [];
  const cov = `${Math.round(COVERAGE * 100)}%`;
  const lossOf = (g: number): number[] => rows.filter((r) => r.model === 'moe' && Number(r.granularity) === g).map((r) => Number(r.valLoss));
  const denseLoss = rows.filter((r) => r.model === 'dense').map((r) => Number(r.valLoss));
  const g1 = points[0].granularity;
  const pm = (iv: Interval): string => (Number.isFinite(iv.hi) ? `${iv.mean.toFixed(4)} ± ${((iv.hi - iv.lo) / 2).toFixed(4)}` : iv.mean.toFixed(4));
  const se = (a: number[], b: number[]): string => {
    if (a.length < 2 || b.length < 2) return '';
    const d = welchDifference(a, b);
    return `${d.mean.toFixed(4)} (${d.z.toFixed(1)} SE)`;
  };
  return [
    {
      title: `Loss per granularity at fixed active FLOPs (mean${points[0].loss.n > 1 ? ` ± ${cov} t interval` : ', one seed'}); differences with Welch SE`,
      columns: [
        { key: 'g', header: 'g' },
        { key: 'loss', header: 'val loss' },
        { key: 'vsG1', header: `vs g=${g1}` },
        { key: 'vsDense', header: 'vs dense' },
      ],
      rows: [
        ...points.map((p) => ({
          g: p.granularity,
          loss: pm(p.loss),
          vsG1: p.granularity === g1 ? '' : se(lossOf(p.granularity), lossOf(g1)) || (p.loss.mean - points[0].loss.mean).toFixed(4),
          vsDense: dense ? se(lossOf(p.granularity), denseLoss) || (p.loss.mean - dense.mean).toFixed(4) : '',
        })),
        ...(dense ? [{ g: 'dense', loss: pm(dense), vsG1: '', vsDense: '' }] : []),
      ],
    },
  ];
}
