import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { gflops, matmulFlops, measure, median, resolveMeasureOptions, summarize } from '../../bench/lib/timing.js';
import { formatNum, formatTable, textWidth, type Column } from '../../bench/lib/table.js';
import { machineInfo, resultsPath, writeSuiteResults } from '../../bench/lib/results.js';
import { parseArgs } from '../../bench/lib/cli.js';
import { asSuite, loadSuites, selectSuites } from '../../bench/lib/suite.js';
import { runIsolated } from '../../bench/lib/isolate.js';
import { groupedTable, planTasks, ratio, ratioTable, relMaxError } from '../../bench/suites/kernels.js';

function tmpDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'moe-bench-'));
}

test('GFLOP/s arithmetic', () => {
  assert.equal(matmulFlops(512, 512, 2048), 2 * 512 * 512 * 2048);
  assert.equal(matmulFlops(2, 3, 4, 5), 240);
  // 2*512^2*2048 = 1.073741824e9 flops in 100 ms = 10.737 GFLOP/s
  assert.ok(Math.abs(gflops(matmulFlops(512, 512, 2048), 100) - 10.73741824) < 1e-9);
  assert.equal(gflops(2e9, 1000), 2);
  assert.throws(() => gflops(1, 0), /time must be positive/);
  assert.throws(() => gflops(1, NaN), /time must be positive/);
});

test('median, best and mean of samples', () => {
  assert.equal(median([3, 1, 2]), 2);
  assert.equal(median([4, 1, 3, 2]), 2.5);
  assert.throws(() => median([]), /no samples/);
  const s = summarize([5, 1, 3]);
  assert.deepEqual([s.reps, s.medianMs, s.bestMs, s.meanMs, s.totalMs], [3, 3, 1, 3, 9]);
  assert.deepEqual(s.samplesMs, [5, 1, 3]);
});

test('measure: warmup, minReps, maxReps and awaited async work', async () => {
  let calls = 0;
  const t = await measure(() => void calls++, { warmup: 2, minReps: 3, minTimeMs: 0 });
  assert.equal(calls, 5);
  assert.equal(t.reps, 3);
  let capped = 0;
  const c = await measure(() => void capped++, { warmup: 0, minReps: 10, maxReps: 4, minTimeMs: 0 });
  assert.equal(c.reps, 4);
  assert.equal(capped, 4);
  // an async benchmark must finish before the next call starts (else its time is not measured)
  let inFlight = 0;
  let maxInFlight = 0;
  await measure(
    async () => {
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      await new Promise((r) => setTimeout(r, 1));
      inFlight--;
    },
    { warmup: 1, minReps: 3, minTimeMs: 0 },
  );
  assert.equal(maxInFlight, 1);
  assert.throws(() => resolveMeasureOptions({ minReps: -1 }), /minReps must be a non-negative number/);
  assert.throws(() => resolveMeasureOptions({ maxReps: 0 }), /maxReps must be >= 1/);
});

test('formatNum keeps benchmark ranges readable', () => {
  assert.equal(formatNum(0), '0');
  assert.equal(formatNum(12), '12');
  assert.equal(formatNum(123.456), '123');
  assert.equal(formatNum(12.345), '12.3');
  assert.equal(formatNum(1.2345), '1.23');
  assert.equal(formatNum(0.12345), '0.123');
  assert.equal(formatNum(0.00012345), '0.00012');
  assert.equal(formatNum(Infinity), 'Infinity');
});

test('formatTable aligns columns: text left, numbers right, missing as "-"', () => {
  const cols: Column[] = [
    { key: 'name', header: 'name' },
    { key: 'gf', header: 'GFLOP/s' },
    { key: 'note', header: 'note' },
  ];
  const out = formatTable(cols, [
    { name: 'wasm', gf: 123.456, note: 'ok' },
    { name: 'js×µ', gf: 2.5, note: null },
    { name: 'native-long', gf: 1000 },
  ]);
  const lines = out.split('\n');
  assert.equal(lines.length, 5);
  assert.match(lines[1], /^-+ {2}-+ {2}-+$/);
  // every numeric cell ends where the header "GFLOP/s" ends
  const end = lines[0].indexOf('GFLOP/s') + 'GFLOP/s'.length;
  for (const [i, v] of [
    [2, '123'],
    [3, '2.50'],
    [4, '1000'],
  ] as const) {
    assert.equal(lines[i].slice(end - v.length, end), v, `row ${i}: ${JSON.stringify(lines[i])}`);
  }
  // text starts at the same column in every row, even with non-ASCII characters
  const noteCol = textWidth(lines[0].slice(0, lines[0].indexOf('note')));
  assert.equal([...lines[2]].slice(noteCol).join(''), 'ok');
  assert.equal([...lines[3]].slice(noteCol).join(''), '-');
  assert.equal([...lines[4]].slice(noteCol).join(''), '-');
  for (const l of lines) assert.equal(l, l.trimEnd());
  // a custom formatter and explicit alignment win over the defaults
  const t = formatTable([{ key: 'r', header: 'ratio', align: 'left', format: (v) => `${v}x` }], [{ r: 2 }]);
  assert.equal(t.split('\n')[2], '2x');
  assert.throws(() => formatTable([], []), /no columns/);
});

test('writeSuiteResults writes JSON atomically with machine info and leaves no temp file', () => {
  const dir = tmpDir();
  try {
    const machine = machineInfo(new Date('2026-01-02T03:04:05Z'));
    assert.equal(machine.date, '2026-01-02T03:04:05.000Z');
    assert.ok(machine.cores >= 1 && machine.cpu.length > 0 && machine.node === process.version);
    const out = path.join(dir, 'nested', 'results');
    const file = writeSuiteResults(out, { suite: 'kernels', machine, options: { quick: true }, durationS: 1.5, rows: [{ case: 'mm', gflops: 1.25 }] });
    assert.equal(file, path.join(out, 'kernels.json'));
    const back = JSON.parse(fs.readFileSync(file, 'utf8'));
    assert.equal(back.suite, 'kernels');
    assert.equal(back.machine.cpu, machine.cpu);
    assert.deepEqual(back.rows, [{ case: 'mm', gflops: 1.25 }]);
    // overwrite replaces the whole file (rename), never appends or leaves temp files behind
    writeSuiteResults(out, { suite: 'kernels', machine, options: {}, durationS: 2, rows: [] });
    assert.deepEqual(JSON.parse(fs.readFileSync(file, 'utf8')).rows, []);
    assert.deepEqual(fs.readdirSync(out), ['kernels.json']);
    assert.throws(() => resultsPath(out, '../evil'), /suite name "..\/evil"/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('parseArgs: suites, options and specific errors', () => {
  const d = parseArgs([]);
  assert.deepEqual([d.suites, d.quick, d.threads, d.peers, d.isolate], [[], false, [1, 2], true, true]);
  const a = parseArgs(['kernels', 'moe', '--quick', '--threads=1,4', '--backends', 'js,wasm', '--no-peers', '--in-process', '--seed', '7']);
  assert.deepEqual(a.suites, ['kernels', 'moe']);
  assert.deepEqual([a.quick, a.threads, a.backends, a.peers, a.isolate, a.seed], [true, [1, 4], ['js', 'wasm'], false, false, 7]);
  assert.throws(() => parseArgs(['--threads', '0']), /--threads: expected comma-separated integers/);
  assert.throws(() => parseArgs(['--threads']), /--threads: missing value/);
  assert.throws(() => parseArgs(['--backends', 'gpu']), /--backends: expected some of js, wasm, native/);
  assert.throws(() => parseArgs(['--fast']), /unknown option "--fast"/);
});

test('suites: named or default exports, discovery, selection errors', async () => {
  const ok = asSuite({ name: 'a', run: async () => [] }, 'a.js');
  assert.equal(ok.name, 'a');
  assert.equal(asSuite({ default: { name: 'b', description: 'd', run: async () => [] } }, 'b.js').description, 'd');
  assert.throws(() => asSuite({ name: 'c' }, 'c.js'), /c\.js: missing function export "run\(opts\)"/);
  assert.throws(() => asSuite({ run: () => [] }, 'd.js'), /d\.js: missing string export "name"/);
  assert.throws(() => selectSuites([ok], ['nope']), /unknown bench suite "nope": available: a/);

  const dir = tmpDir();
  try {
    fs.writeFileSync(path.join(dir, 'package.json'), '{"type":"module"}');
    fs.writeFileSync(path.join(dir, 'z.js'), 'export const name = "zeta"; export async function run() { return [{ x: 1 }]; }');
    fs.writeFileSync(path.join(dir, 'a.js'), 'export default { name: "alpha", run: async () => [] };');
    fs.writeFileSync(path.join(dir, 'a.d.ts'), 'export {};');
    const suites = await loadSuites(dir);
    assert.deepEqual(
      suites.map((s) => s.name),
      ['alpha', 'zeta'],
    );
    assert.deepEqual(
      selectSuites(suites, ['zeta', 'alpha']).map((s) => s.name),
      ['zeta', 'alpha'],
    );
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('runIsolated: result and partial values come back; a hung child is killed; a crash is reported', async () => {
  const dir = tmpDir();
  try {
    const mod = path.join(dir, 'task.mjs');
    fs.writeFileSync(
      mod,
      [
        'export async function good(arg, emit) { emit({ i: 1 }); emit({ i: 2 }); return { doubled: arg.x * 2, arr: new Float32Array([1.5]) }; }',
        // blocks the thread the way a worker that never signals would (Atomics.wait cannot be interrupted)
        'export function hang(arg, emit) { emit("started"); Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0); }',
        'export function crash() { process.exit(3); }',
        'export function fail() { throw new Error("boom"); }',
      ].join('\n'),
    );
    const url = pathToFileURL(mod).href;
    const g = await runIsolated<{ doubled: number; arr: Float32Array }>(url, 'good', { x: 21 }, { timeoutMs: 20000 });
    assert.ok(g.ok);
    if (g.ok) {
      assert.equal(g.value.doubled, 42);
      assert.ok(g.value.arr instanceof Float32Array);
    }
    assert.deepEqual(g.partial, [{ i: 1 }, { i: 2 }]);
    // long enough for a child process to start on a loaded 2-core CI machine before it blocks
    const h = await runIsolated(url, 'hang', {}, { timeoutMs: 8000 });
    assert.equal(h.ok, false);
    if (!h.ok) assert.equal(h.reason, 'timeout');
    assert.deepEqual(h.partial, ['started']);
    const c = await runIsolated(url, 'crash', {}, { timeoutMs: 20000 });
    assert.equal(c.ok, false);
    if (!c.ok) assert.match(c.error, /code 3/);
    const f = await runIsolated(url, 'fail', {}, { timeoutMs: 20000 });
    assert.equal(f.ok, false);
    if (!f.ok) assert.deepEqual([f.reason, /boom/.test(f.error)], ['error', true]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('kernels suite: ratios, grouped-vs-plain table, error metric, task plan', () => {
  assert.equal(ratio(30, 10), 3);
  assert.equal(ratio(30, null), null);
  assert.equal(ratio(0, 10), null);
  const row = (c: string, impl: string, threads: number, gf: number, status = 'ok') => ({ case: c, impl, threads, gflops: gf, status });
  const rows = [
    row('mm 512', 'tfjs-wasm', 1, 10),
    row('mm 512', 'jax-js', 1, 0, 'unavailable'),
    row('mm 512', 'wasm', 2, 25),
    row('mm 512', 'wasm', 1, 15),
    row('mm 512', 'native', 1, 40),
    row('grouped 64x64', 'wasm', 1, 8),
    row('plain 64x64', 'wasm', 1, 10),
  ];
  const rt = ratioTable(rows).rows;
  assert.deepEqual(
    rt.map((r) => [r.impl, r.threads, r.vsTfjs, r.vsJax]),
    [
      ['wasm', 1, 1.5, null],
      ['wasm', 2, 2.5, null],
      ['native', 1, 4, null],
    ],
  );
  const gt = groupedTable(rows).rows;
  assert.deepEqual(
    gt.map((r) => [r.case, r.impl, r.ratio]),
    [['grouped 64x64', 'wasm', 0.8]],
  );
  const text = formatTable(ratioTable(rows).columns, rt);
  assert.match(text, /1\.50x \[1\]/);
  assert.match(text, /n\/a/);

  assert.equal(relMaxError(new Float32Array([1, 2]), new Float32Array([1, 2])), 0);
  assert.equal(relMaxError(new Float32Array([1, 2.5]), new Float32Array([1, 2])), 0.25);
  assert.equal(relMaxError(new Float32Array([NaN, 2]), new Float32Array([1, 2])), Infinity);
  assert.equal(relMaxError(new Float32Array([1]), new Float32Array([1, 2])), Infinity);

  assert.deepEqual(planTasks({ peers: true, backends: ['js', 'wasm'], threads: [1, 2] }), [
    { type: 'tfjs-wasm' },
    { type: 'jax-js' },
    { type: 'ours', backend: 'js', threads: 1 },
    { type: 'ours', backend: 'wasm', threads: 1 },
    { type: 'ours', backend: 'wasm', threads: 2 },
  ]);
});
