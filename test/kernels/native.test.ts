import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import type { Backend, MatmulOptions } from '../../src/tensor/backend.js';
import { Rng } from '../../src/tensor/random.js';
import { refGroupedMatmul, refGroupedMatmulTN, refMatmul } from '../../src/kernels/js.js';
import { createNativeBackend } from '../../src/kernels/native/index.js';
import { attrFloat, attrInt, DataType, encodeModel, type ModelDef } from '../../src/kernels/native/onnx.js';
import { createSession, f32, loadOrtBinding } from '../../src/kernels/native/ort.js';

const rng = new Rng(1234);

function rand(n: number): Float32Array {
  return rng.fillUniform(new Float32Array(n), -1, 1);
}

function assertClose(actual: Float32Array, expected: Float32Array, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  let scale = 1;
  for (let i = 0; i < expected.length; i++) scale = Math.max(scale, Math.abs(expected[i]));
  for (let i = 0; i < expected.length; i++) {
    const d = Math.abs(actual[i] - expected[i]);
    if (!(d <= 1e-4 * scale)) assert.fail(`${what}: element ${i} is ${actual[i]}, expected ${expected[i]}`);
  }
}

describe('onnx encoder', () => {
  const model = (): ModelDef => ({
    opsets: [{ domain: '', version: 17 }],
    graph: {
      name: 'enc',
      nodes: [
        {
          opType: 'Gemm',
          inputs: ['X', 'W'],
          outputs: ['Y'],
          attributes: { transB: attrInt(1), alpha: attrFloat(0.5) },
        },
      ],
      // W is an initializer: exercises TensorProto raw_data, dims and data_type
      initializers: [{ name: 'W', dims: [2, 3], dataType: DataType.FLOAT, raw: new Uint8Array(new Float32Array([1, 2, 3, 4, 5, 6]).buffer) }],
      inputs: [{ name: 'X', elemType: DataType.FLOAT, shape: ['batch', 3] }],
      outputs: [{ name: 'Y', elemType: DataType.FLOAT, shape: ['batch', 2] }],
    },
  });

  test('a written model loads in onnxruntime and computes the right thing', () => {
    const s = createSession(loadOrtBinding(), encodeModel(model()), { threads: 1, spinning: false });
    try {
      assert.deepEqual(
        s.inputMetadata.map((m) => m.name),
        ['X'],
      );
      assert.deepEqual(
        s.outputMetadata.map((m) => m.name),
        ['Y'],
      );
      const y = new Float32Array(4);
      // symbolic batch dim: run with 2 rows; Y = 0.5 * X W^T
      s.run({ X: f32(new Float32Array([1, 0, 0, 1, 1, 1]), [2, 3]) }, { Y: f32(y, [2, 2]) });
      assert.deepEqual(Array.from(y), [0.5, 2, 3, 7.5]);
    } finally {
      s.dispose();
    }
  });

  test('varints: multi-byte field values and large dims round-trip through ORT', () => {
    // a fixed dim of 300 needs a 2-byte varint; ORT rejects a mismatched fed shape
    const m = model();
    m.graph.inputs[0].shape = [300, 3];
    m.graph.outputs[0].shape = [300, 2];
    const s = createSession(loadOrtBinding(), encodeModel(m), { threads: 1, spinning: false });
    try {
      const y = new Float32Array(600);
      s.run({ X: f32(new Float32Array(900).fill(1), [300, 3]) }, { Y: f32(y, [300, 2]) });
      assert.equal(y[598], 3);
      assert.equal(y[599], 7.5);
      assert.throws(() => s.run({ X: f32(new Float32Array(6), [2, 3]) }, { Y: null as never }));
    } finally {
      s.dispose();
    }
  });

  test('malformed sizes error clearly', () => {
    const badRaw = model();
    badRaw.graph.initializers![0].raw = new Uint8Array(20);
    assert.throws(() => encodeModel(badRaw), /initializer W has 20 bytes, dims \[2, 3\] need 24/);
    const negDim = model();
    negDim.graph.inputs[0].shape = ['batch', -3];
    assert.throws(() => encodeModel(negDim), /X dim 1 has invalid dimension -3/);
    const fracDim = model();
    fracDim.graph.initializers![0].dims = [2, 1.5];
    assert.throws(() => encodeModel(fracDim), /initializer W dim 1 has invalid dimension 1.5/);
    const emptySym = model();
    emptySym.graph.outputs[0].shape = ['', 2];
    assert.throws(() => encodeModel(emptySym), /Y dim 0 has an empty symbolic name/);
    const badAttr = model();
    badAttr.graph.nodes[0].attributes!.transB = attrInt(0.5);
    assert.throws(() => encodeModel(badAttr), /needs an integer, got 0.5/);
  });
});

for (const threads of [1, 2]) {
  describe(`native backend, ${threads} thread(s)`, () => {
    // minFlops 0 sends every product through ORT; the default backend also covers the JS shortcut.
    let ort: Backend;
    let dflt: Backend;
    before(async () => {
      ort = await createNativeBackend({ threads, minFlops: 0 });
      dflt = await createNativeBackend({ threads });
    });
    after(() => {
      ort.dispose();
      dflt.dispose();
    });

    test('name and threads', () => {
      assert.equal(ort.name, 'native');
      assert.equal(ort.threads, threads);
    });

    const shapes: [number, number, number][] = [
      [1, 1, 1],
      [1, 7, 1],
      [3, 5, 7],
      [17, 1, 9],
      [33, 65, 31],
      [64, 48, 80],
      [0, 4, 5],
      [4, 0, 5],
      [4, 5, 0],
    ];

    test('matmul: all transpose combos, odd/size-1/empty dims, vs js reference', () => {
      for (const be of [ort, dflt]) {
        for (const [m, k, n] of shapes) {
          for (const transA of [false, true]) {
            for (const transB of [false, true]) {
              const a = rand(m * k);
              const b = rand(k * n);
              const opts: MatmulOptions = { transA, transB };
              const what = `matmul m=${m} k=${k} n=${n} tA=${transA} tB=${transB}`;
              assertClose(be.matmul(a, b, m, k, n, opts), refMatmul(a, b, m, k, n, opts), what);
            }
          }
        }
      }
    });

    test('batched matmul, with and without broadcastB, all transposes', () => {
      for (const be of [ort, dflt]) {
        for (const batch of [1, 3, 0]) {
          for (const [m, k, n] of [
            [5, 6, 7],
            [1, 9, 2],
            [20, 33, 17],
            [3, 0, 2],
          ] as [number, number, number][]) {
            for (const broadcastB of [false, true]) {
              for (const transA of [false, true]) {
                for (const transB of [false, true]) {
                  const a = rand(batch * m * k);
                  const b = rand((broadcastB ? 1 : batch) * k * n);
                  const opts: MatmulOptions = { transA, transB, batch, broadcastB };
                  const what = `matmul batch=${batch} m=${m} k=${k} n=${n} tA=${transA} tB=${transB} bB=${broadcastB}`;
                  assertClose(be.matmul(a, b, m, k, n, opts), refMatmul(a, b, m, k, n, opts), what);
                }
              }
            }
          }
        }
      }
    });

    test('out and accumulate write into the given array (2D and batched), longer arrays allowed', () => {
      for (const be of [ort, dflt]) {
        for (const batch of [1, 2]) {
          for (const broadcastB of [false, true]) {
            for (const transA of [false, true]) {
              for (const transB of [false, true]) {
                for (const accumulate of [false, true]) {
                  const [m, k, n] = [13, 21, 11];
                  // inputs and out longer than needed: only the leading part is used/touched
                  const a = rand(batch * m * k + 3);
                  const b = rand((broadcastB ? 1 : batch) * k * n + 5);
                  const init = rand(batch * m * n + 4);
                  const out = init.slice();
                  const expected = init.slice();
                  const opts = { transA, transB, batch, broadcastB, accumulate };
                  refMatmul(a, b, m, k, n, { ...opts, out: expected });
                  const r = be.matmul(a, b, m, k, n, { ...opts, out });
                  const what = `matmul out batch=${batch} tA=${transA} tB=${transB} bB=${broadcastB} acc=${accumulate}`;
                  assert.equal(r, out, `${what}: returns out`);
                  assertClose(out, expected, what);
                }
              }
            }
          }
        }
        // accumulate into a view with a byte offset (a slice of a bigger buffer)
        const big = rand(100);
        const view = big.subarray(10, 10 + 12);
        const before = big.slice();
        const a = rand(3 * 40);
        const b = rand(40 * 4);
        const expected = view.slice();
        refMatmul(a, b, 3, 40, 4, { out: expected, accumulate: true });
        be.matmul(a, b, 3, 40, 4, { out: view, accumulate: true });
        assertClose(view, expected, 'accumulate into subarray view');
        assert.deepEqual(big.subarray(0, 10), before.subarray(0, 10));
        assert.deepEqual(big.subarray(22), before.subarray(22));
        // k = 0: overwrite gives zeros, accumulate leaves out unchanged
        const o = new Float32Array([1, 2, 3, 4]);
        be.matmul(new Float32Array(0), new Float32Array(0), 2, 0, 2, { out: o, accumulate: true });
        assert.deepEqual(Array.from(o), [1, 2, 3, 4]);
        be.matmul(new Float32Array(0), new Float32Array(0), 2, 0, 2, { out: o });
        assert.deepEqual(Array.from(o), [0, 0, 0, 0]);
        // accumulate without out behaves like the reference (fresh zeros)
        const a2 = rand(4 * 30);
        const b2 = rand(30 * 5);
        assertClose(be.matmul(a2, b2, 4, 30, 5, { accumulate: true }), refMatmul(a2, b2, 4, 30, 5), 'accumulate without out');
      }
    });

    test('groupedMatmul: zero-size groups, balanced and unbalanced, transB', () => {
      const cases: number[][] = [[3, 0, 5, 1], [0, 0, 4], [0, 0, 0], [8, 8, 8, 8], [1], [7], [0], [40, 2, 0, 19, 33]];
      for (const be of [ort, dflt]) {
        for (const groups of cases) {
          for (const [k, n] of [
            [6, 5],
            [33, 17],
            [1, 1],
            [0, 4],
            [5, 0],
          ]) {
            for (const transB of [false, true]) {
              const sizes = Int32Array.from(groups);
              const rows = groups.reduce((x, y) => x + y, 0);
              const a = rand(rows * k);
              const w = rand(groups.length * k * n);
              const what = `groupedMatmul sizes=[${groups}] k=${k} n=${n} tB=${transB}`;
              assertClose(be.groupedMatmul(a, w, sizes, k, n, transB), refGroupedMatmul(a, w, sizes, k, n, transB), what);
            }
          }
        }
      }
    });

    test('groupedMatmul into out, overwriting or accumulating (balanced, unbalanced, tiny)', () => {
      for (const be of [ort, dflt]) {
        for (const groups of [
          [3, 0, 5, 1],
          [8, 8, 8, 8],
          [40, 2, 0, 19, 33],
          [2, 1],
        ]) {
          for (const [k, n] of [
            [33, 17],
            [1, 1],
            [0, 4],
          ]) {
            for (const transB of [false, true]) {
              const sizes = Int32Array.from(groups);
              const rows = groups.reduce((x, y) => x + y, 0);
              const a = rand(rows * k);
              const w = rand(groups.length * k * n);
              const ref = refGroupedMatmul(a, w, sizes, k, n, transB);
              const what = `groupedMatmul out sizes=[${groups}] k=${k} n=${n} tB=${transB}`;
              const out = rand(rows * n);
              assert.equal(be.groupedMatmul(a, w, sizes, k, n, transB, { out }), out, what);
              assertClose(out, ref, what);
              const c0 = rand(rows * n);
              const acc = c0.slice();
              assert.equal(be.groupedMatmul(a, w, sizes, k, n, transB, { out: acc, accumulate: true }), acc, what);
              assertClose(
                acc,
                ref.map((x, i) => x + c0[i]),
                `${what} accumulate`,
              );
            }
          }
        }
      }
    });

    test('groupedMatmulTN: per-group A^T G, zero-size groups give zero blocks', () => {
      const cases: number[][] = [[3, 0, 5, 1], [0, 0], [8, 8, 8], [1], [40, 2, 0, 19, 33], [16, 16]];
      for (const be of [ort, dflt]) {
        for (const groups of cases) {
          for (const [k, n] of [
            [6, 5],
            [33, 17],
            [1, 1],
            [0, 3],
            [4, 0],
          ]) {
            const sizes = Int32Array.from(groups);
            const rows = groups.reduce((x, y) => x + y, 0);
            const a = rand(rows * k);
            const g = rand(rows * n);
            const what = `groupedMatmulTN sizes=[${groups}] k=${k} n=${n}`;
            assertClose(be.groupedMatmulTN(a, g, sizes, k, n), refGroupedMatmulTN(a, g, sizes, k, n), what);
          }
        }
      }
    });

    test('invalid arguments give errors naming the kernel and sizes', () => {
      const a = rand(6);
      const b = rand(6);
      assert.throws(() => ort.matmul(a, b, 2, 4, 3), /native matmul: A has 6 elements, needs at least 8 \(batch=1, m=2, k=4, n=3\)/);
      assert.throws(() => ort.matmul(a, b, 2, 3, 3), /native matmul: B has 6 elements, needs at least 9 \(batch=1, m=2, k=3, n=3\)/);
      assert.throws(() => ort.matmul(a, b, 2, 3, 2, { batch: 2 }), /native matmul: A has 6 elements, needs at least 12 \(batch=2/);
      assert.throws(() => ort.matmul(a, b, 2, 3, 2, { out: new Float32Array(3) }), /native matmul: out has 3 elements, needs at least 4/);
      assert.throws(() => ort.matmul(a, b, -1, 3, 2), /native matmul: m must be a non-negative integer \(batch=1, m=-1, k=3, n=2\)/);
      assert.throws(() => ort.matmul(a, b, 2, 1.5, 2), /native matmul: k must be a non-negative integer/);
      assert.throws(() => ort.matmul(a, b, 2, 3, 2, { batch: NaN }), /native matmul: batch must be a non-negative integer/);
      assert.throws(() => ort.matmul([1, 2] as unknown as Float32Array, b, 1, 2, 1), /native matmul: A must be a Float32Array/);
      const sizes = Int32Array.from([2, 1]);
      assert.throws(() => ort.groupedMatmul(a, b, sizes, 2, 2), /native groupedMatmul: W has 6 elements, needs at least 8 \(groups=2, rows=3, k=2, n=2\)/);
      assert.throws(() => ort.groupedMatmul(a, rand(12), sizes, 4, 2), /native groupedMatmul: A has 6 elements, needs at least 12/);
      assert.throws(() => ort.groupedMatmul(a, b, Int32Array.from([2, -1]), 2, 1), /native groupedMatmul: group 1 has negative size -1/);
      assert.throws(() => ort.groupedMatmul(a, b, new Int32Array(0), 2, 1), /native groupedMatmul: sizes is empty/);
      assert.throws(() => ort.groupedMatmulTN(a, b, sizes, 2, 3), /native groupedMatmulTN: G has 6 elements, needs at least 9/);
      assert.throws(() => ort.groupedMatmulTN(a, b, sizes, -2, 3), /native groupedMatmulTN: k must be a non-negative integer/);
    });
  });
}

describe('native backend lifecycle', () => {
  test('rejects bad options and use after dispose', async () => {
    await assert.rejects(createNativeBackend({ threads: 0 }), /native backend: threads must be an integer in \[1, 256\], got 0/);
    const be = await createNativeBackend({ threads: 1 });
    be.dispose();
    assert.throws(() => be.matmul(rand(64 * 64), rand(64 * 64), 64, 64, 64), /native backend: used after dispose\(\)/);
  });

  test('the binding is driven synchronously (no promise, no event-loop turn)', async () => {
    const be = await createNativeBackend({ threads: 1 });
    try {
      const a = rand(128 * 64);
      const b = rand(64 * 32);
      const r = be.matmul(a, b, 128, 64, 32);
      assert.ok(r instanceof Float32Array);
      assertClose(r, refMatmul(a, b, 128, 64, 32), 'sync matmul');
    } finally {
      be.dispose();
    }
  });

  test('onnxruntime-node is resolvable as a dependency', () => {
    const require = createRequire(import.meta.url);
    assert.ok(require.resolve('onnxruntime-node/dist/binding.js'));
  });
});
