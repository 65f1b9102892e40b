/**
 * The wasm backend's kernel checks against the js reference, shared by the Node test
 * (wasm.test.ts, node:test + node:assert) and the browser test (test/browser/kernel-worker.ts,
 * the same cases on the browser loader inside a Web Worker). Platform-neutral: the assertion
 * functions are passed in.
 */
import { refGroupedMatmul, refGroupedMatmulTN, refMatmul } from '../../src/kernels/js.js';
import type { Backend } from '../../src/tensor/backend.js';
import { Rng } from '../../src/tensor/random.js';

/** The node:assert subset the cases use. */
export interface Assert {
  equal(actual: unknown, expected: unknown, message?: string): void;
  deepEqual(actual: unknown, expected: unknown, message?: string): void;
  fail(message: string): never;
  throws(fn: () => unknown, expected: RegExp): void;
}

export interface KernelCase {
  name: string;
  run(be: Backend, assert: Assert): void;
}

const rng = new Rng(1234);

function rand(n: number): Float32Array {
  return rng.fillUniform(new Float32Array(n), -1, 1);
}

let assert: Assert;

/** |got - want| <= 1e-4 * (max |want| + 1) element-wise (f32 accumulation vs the f64 reference). */
function assertClose(got: Float32Array, want: Float32Array, what: string): void {
  assert.equal(got.length, want.length, `${what}: length`);
  let scale = 1;
  for (const v of want) scale = Math.max(scale, Math.abs(v));
  for (let i = 0; i < want.length; i++) {
    if (!(Math.abs(got[i] - want[i]) <= 1e-4 * scale)) {
      assert.fail(`${what}: element ${i} is ${got[i]}, expected ${want[i]}`);
    }
  }
}

// Odd sizes around the micro-tile (4 x 8), SIMD width (4), pack slice (256) and task sizes.
const DIMS = [0, 1, 3, 7, 17, 33, 65];

const CASES: KernelCase[] = [
  {
    name: 'matmul matches the reference for odd sizes and all transposes',
    run: (be, _assert) => {
      for (const m of DIMS) {
        for (const k of DIMS) {
          for (const n of DIMS) {
            for (const transA of [false, true]) {
              for (const transB of [false, true]) {
                const a = rand(m * k);
                const b = rand(k * n);
                const opts = { transA, transB };
                assertClose(be.matmul(a, b, m, k, n, opts), refMatmul(a, b, m, k, n, opts), `m=${m} k=${k} n=${n} tA=${transA} tB=${transB}`);
              }
            }
          }
        }
      }
    },
  },

  {
    name: 'matmul: large enough to use every thread, deep k (several pack slices)',
    run: (be, _assert) => {
      for (const [m, k, n] of [
        [129, 600, 131],
        [64, 257, 300],
        [250, 40, 16],
        [3, 1000, 9],
      ]) {
        for (const transA of [false, true]) {
          for (const transB of [false, true]) {
            const a = rand(m * k);
            const b = rand(k * n);
            const opts = { transA, transB };
            assertClose(be.matmul(a, b, m, k, n, opts), refMatmul(a, b, m, k, n, opts), `m=${m} k=${k} n=${n} tA=${transA} tB=${transB}`);
          }
        }
      }
    },
  },

  {
    name: 'matmul: batch, broadcastB, out and accumulate',
    run: (be, assert) => {
      for (const [batch, m, k, n] of [
        [3, 17, 33, 9],
        [4, 70, 65, 66],
        [2, 1, 1, 1],
        [0, 5, 5, 5],
        [5, 0, 3, 4],
      ]) {
        for (const broadcastB of [false, true]) {
          for (const transB of [false, true]) {
            const a = rand(batch * m * k);
            const b = rand((broadcastB ? 1 : batch) * k * n);
            const what = `batch=${batch} m=${m} k=${k} n=${n} bcast=${broadcastB} tB=${transB}`;
            const opts = { batch, broadcastB, transB };
            assertClose(be.matmul(a, b, m, k, n, opts), refMatmul(a, b, m, k, n, opts), what);

            const init = rand(batch * m * n);
            const out = init.slice();
            const ret = be.matmul(a, b, m, k, n, { ...opts, out, accumulate: true });
            assert.equal(ret, out, `${what}: returns out`);
            assertClose(out, refMatmul(a, b, m, k, n, { ...opts, out: init.slice(), accumulate: true }), `${what} accumulate`);

            const over = rand(batch * m * n);
            be.matmul(a, b, m, k, n, { ...opts, out: over });
            assertClose(over, refMatmul(a, b, m, k, n, opts), `${what} out`);
          }
        }
      }
    },
  },

  {
    name: 'matmul with k = 0 gives zeros, or leaves out unchanged when accumulating',
    run: (be, assert) => {
      const c = be.matmul(new Float32Array(0), new Float32Array(0), 3, 0, 4);
      assert.deepEqual(Array.from(c), new Array(12).fill(0));
      const out = rand(12);
      const keep = out.slice();
      be.matmul(new Float32Array(0), new Float32Array(0), 3, 0, 4, { out, accumulate: true });
      assert.deepEqual(out, keep);
    },
  },

  {
    name: 'reuses its memory across calls of different sizes',
    run: (be, _assert) => {
      for (const [m, k, n] of [
        [300, 300, 300],
        [5, 6, 7],
        [300, 300, 300],
      ]) {
        const a = rand(m * k);
        const b = rand(k * n);
        assertClose(be.matmul(a, b, m, k, n), refMatmul(a, b, m, k, n), `m=${m} k=${k} n=${n}`);
      }
    },
  },

  {
    name: 'groupedMatmul matches the reference, with empty groups and transB',
    run: (be, _assert) => {
      for (const [sizesArr, k, n] of [
        [[3, 0, 17, 1, 65], 33, 17],
        [[0, 0, 0], 7, 9],
        [[], 4, 4],
        [[130, 0, 7, 200], 65, 70],
        [[1], 1, 1],
        [[5, 6], 0, 3],
        [[5, 6], 3, 0],
      ] as [number[], number, number][]) {
        const sizes = Int32Array.from(sizesArr);
        const rows = sizesArr.reduce((s, x) => s + x, 0);
        for (const transB of [false, true]) {
          const a = rand(rows * k);
          const w = rand(sizes.length * k * n);
          assertClose(be.groupedMatmul(a, w, sizes, k, n, transB), refGroupedMatmul(a, w, sizes, k, n, transB), `sizes=[${sizesArr}] k=${k} n=${n} tB=${transB}`);
        }
      }
    },
  },

  {
    name: 'groupedMatmul into out, overwriting or accumulating',
    run: (be, assert) => {
      for (const [sizesArr, k, n] of [
        [[3, 0, 17, 1, 65], 33, 17],
        [[5, 6], 0, 3],
      ] as [number[], number, number][]) {
        const sizes = Int32Array.from(sizesArr);
        const rows = sizesArr.reduce((s, x) => s + x, 0);
        for (const transB of [false, true]) {
          const a = rand(rows * k);
          const w = rand(sizes.length * k * n);
          const ref = refGroupedMatmul(a, w, sizes, k, n, transB);
          const out = rand(rows * n);
          assert.equal(be.groupedMatmul(a, w, sizes, k, n, transB, { out }), out);
          assertClose(out, ref, `out sizes=[${sizesArr}] k=${k} n=${n} tB=${transB}`);
          const c0 = rand(rows * n);
          const acc = c0.slice();
          be.groupedMatmul(a, w, sizes, k, n, transB, { out: acc, accumulate: true });
          assertClose(
            acc,
            ref.map((x, i) => x + c0[i]),
            `accumulate sizes=[${sizesArr}] k=${k} n=${n} tB=${transB}`,
          );
        }
      }
    },
  },

  {
    name: 'groupedMatmul: many and skewed groups, big and small ones in one call, deep k, out and accumulate',
    run: (be, _assert) => {
      // Sizes chosen to run in parallel and to mix the fused path (groups of <= 1024 rows, up
      // to 32 strips per task) with the shared-pack path (larger groups), several KC slices,
      // and enough groups that the input copy publishes its progress in several steps.
      const skewed = Array.from({ length: 40 }, (_, e) => (e % 7 === 3 ? 0 : Math.max(1, Math.floor(300 * 0.8 ** e)) + (e % 5)));
      for (const [sizesArr, k, n] of [
        [skewed, 64, 70],
        [[1100, 3, 0, 50, 1025], 40, 70],
        [[20, 33, 0, 129], 600, 300],
        [Array.from({ length: 100 }, (_, e) => e % 4), 96, 64],
      ] as [number[], number, number][]) {
        const sizes = Int32Array.from(sizesArr);
        const rows = sizesArr.reduce((s, x) => s + x, 0);
        for (const transB of [false, true]) {
          const what = `sizes=[${sizesArr.length} groups, ${rows} rows] k=${k} n=${n} tB=${transB}`;
          const a = rand(rows * k);
          const w = rand(sizes.length * k * n);
          const ref = refGroupedMatmul(a, w, sizes, k, n, transB);
          assertClose(be.groupedMatmul(a, w, sizes, k, n, transB), ref, what);
          const c0 = rand(rows * n);
          const acc = c0.slice();
          be.groupedMatmul(a, w, sizes, k, n, transB, { out: acc, accumulate: true });
          assertClose(
            acc,
            ref.map((x, i) => x + c0[i]),
            `accumulate ${what}`,
          );
        }
      }
    },
  },

  {
    name: 'groupedMatmulTN matches the reference, with empty groups',
    run: (be, _assert) => {
      for (const [sizesArr, k, n] of [
        [[3, 0, 17, 1, 65], 33, 17],
        [[0, 0], 7, 9],
        [[300, 2, 0, 41], 40, 24],
        // parallel: output rows (k) above and below the fused limit, several KC slices of tokens
        [[700, 0, 33, 300], 1030, 20],
        [[300, 5, 0, 64, 17], 70, 300],
        [[1], 1, 1],
        [[2, 3], 0, 5],
      ] as [number[], number, number][]) {
        const sizes = Int32Array.from(sizesArr);
        const rows = sizesArr.reduce((s, x) => s + x, 0);
        const a = rand(rows * k);
        const g = rand(rows * n);
        assertClose(be.groupedMatmulTN(a, g, sizes, k, n), refGroupedMatmulTN(a, g, sizes, k, n), `sizes=[${sizesArr}] k=${k} n=${n}`);
      }
    },
  },

  {
    name: 'rejects invalid arguments with errors naming the kernel and sizes',
    run: (be, assert) => {
      assert.throws(() => be.matmul(new Float32Array(5), new Float32Array(6), 2, 3, 2), /wasm matmul: A has 5 elements, needs at least 6 \(m=2, k=3, n=2/);
      assert.throws(() => be.matmul(new Float32Array(6), new Float32Array(5), 2, 3, 2), /wasm matmul: B has 5 elements, needs at least 6/);
      assert.throws(() => be.matmul(new Float32Array(6), new Float32Array(6), 2, 3, 2, { out: new Float32Array(3) }), /wasm matmul: out has 3 elements/);
      assert.throws(() => be.matmul(new Float32Array(6), new Float32Array(6), 2, 3, 2, { accumulate: true }), /wasm matmul: accumulate needs out/);
      assert.throws(() => be.matmul(new Float32Array(6), new Float32Array(6), -2, 3, 2), /wasm matmul: sizes must be non-negative integers \(m=-2/);
      assert.throws(() => be.matmul(new Float32Array(6), new Float32Array(6), 2.5, 3, 2), /wasm matmul: sizes/);
      assert.throws(() => be.groupedMatmul(new Float32Array(4), new Float32Array(4), Int32Array.from([1, -1]), 2, 2), /wasm groupedMatmul: group 1 has negative size -1/);
      assert.throws(() => be.groupedMatmul(new Float32Array(3), new Float32Array(8), Int32Array.from([2]), 2, 2), /wasm groupedMatmul: A has 3 elements, needs at least 4/);
      assert.throws(() => be.groupedMatmul(new Float32Array(4), new Float32Array(3), Int32Array.from([2]), 2, 2), /wasm groupedMatmul: W has 3 elements/);
      assert.throws(() => be.groupedMatmulTN(new Float32Array(4), new Float32Array(3), Int32Array.from([2]), 2, 2), /wasm groupedMatmulTN: G has 3 elements/);
    },
  },
];

/** Every case, with `a` as the assertion functions. */
export function kernelCases(a: Assert): KernelCase[] {
  return CASES.map((c) => ({
    name: c.name,
    run: (be) => {
      assert = a;
      c.run(be, a);
    },
  }));
}
