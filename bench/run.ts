/**
 * Benchmark entry point: `npm run bench` or `node dist/bench/run.js [suite...] [--quick] ...`.
 * Runs the suites found in bench/suites/, prints each one's tables to stdout (progress goes to
 * stderr) and writes bench/results/<suite>.json with the machine description.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import { parseArgs, USAGE } from './lib/cli.js';
import { formatMachine, machineInfo, writeSuiteResults } from './lib/results.js';
import { loadSuites, selectSuites, type SuiteOptions } from './lib/suite.js';
import { formatTable, type Column, type Row } from './lib/table.js';

const here = path.dirname(fileURLToPath(import.meta.url));
// dist/bench/run.js -> <repo>/bench/results (results live next to the sources, not in dist/)
const repoRoot = path.resolve(here, '..', '..');

const DEFAULT_COLUMNS: Column[] = [
  { key: 'case', header: 'case' },
  { key: 'impl', header: 'impl' },
  { key: 'threads', header: 'thr' },
  { key: 'status', header: 'status' },
  { key: 'gflops', header: 'GFLOP/s' },
  { key: 'medianMs', header: 'ms' },
  { key: 'note', header: 'note' },
];

async function main(): Promise<number> {
  const args = parseArgs(process.argv.slice(2));
  if (args.help) {
    console.log(USAGE);
    return 0;
  }
  const all = await loadSuites(path.join(here, 'suites'));
  if (args.list) {
    for (const s of all) console.log(`${s.name.padEnd(10)} ${s.description}`);
    return 0;
  }
  const suites = selectSuites(all, args.suites);
  const outDir = path.resolve(args.outDir ?? path.join(repoRoot, 'bench', 'results'));
  const machine = machineInfo();
  console.log(`machine: ${formatMachine(machine)}`);
  if (machine.loadavg[0] > machine.availableParallelism * 0.5) {
    console.log(`note: load average ${machine.loadavg[0]} on ${machine.availableParallelism} cores; expect noisy numbers`);
  }
  const opts: SuiteOptions = {
    quick: args.quick,
    threads: args.threads,
    backends: args.backends,
    peers: args.peers,
    isolate: args.isolate,
    seed: args.seed,
    outDir,
    log: (msg) => process.stderr.write(msg + '\n'),
  };
  let failed = 0;
  for (const s of suites) {
    const t0 = performance.now();
    console.log(`\n== ${s.name}${args.quick ? ' (quick)' : ''}: ${s.description}`);
    let rows: Row[];
    try {
      rows = await s.run(opts);
    } catch (e) {
      failed++;
      console.log(`suite ${s.name} failed: ${(e as Error)?.stack ?? String(e)}`);
      continue;
    }
    const durationS = Math.round((performance.now() - t0) / 100) / 10;
    console.log(formatTable(s.columns ?? DEFAULT_COLUMNS, rows));
    const tables = s.report ? s.report(rows, opts) : [];
    for (const t of tables) {
      console.log(`\n${t.title}`);
      console.log(t.rows.length > 0 ? formatTable(t.columns, t.rows) : '(nothing to compare)');
    }
    const { log: _log, outDir: _outDir, ...jsonOpts } = opts;
    const file = writeSuiteResults(outDir, {
      suite: s.name,
      machine,
      options: jsonOpts,
      durationS,
      rows,
      tables: tables.map((t) => ({ title: t.title, rows: t.rows })),
    });
    console.log(`\n${s.name}: ${durationS} s, results in ${path.relative(process.cwd(), file) || file}`);
  }
  return failed > 0 ? 1 : 0;
}

main().then(
  (code) => {
    // backends may hold worker threads or native pools: exit explicitly once results are written
    process.exit(code);
  },
  (e) => {
    console.error(e instanceof Error ? e.message : String(e));
    process.exit(2);
  },
);
