import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createWasmBackend } from '../../src/kernels/wasm/index.js';
import type { Backend } from '../../src/tensor/backend.js';
import { kernelCases } from './wasm-cases.js';

for (const threads of [1, 2]) {
  describe(`wasm backend, ${threads} thread(s)`, () => {
    let be: Backend;
    before(async () => {
      be = await createWasmBackend({ threads });
    });
    after(() => be.dispose());

    it('reports its name and threads', () => {
      assert.equal(be.name, 'wasm');
      assert.equal(be.threads, threads);
    });

    for (const c of kernelCases(assert)) it(c.name, () => c.run(be, assert));
  });
}

describe('createWasmBackend', () => {
  it('rejects a bad thread count', async () => {
    await assert.rejects(() => createWasmBackend({ threads: 0 }), /createWasmBackend: threads must be an integer/);
  });

  it('throws after dispose', async () => {
    const be = await createWasmBackend({ threads: 2 });
    be.dispose();
    assert.throws(() => be.matmul(new Float32Array(1), new Float32Array(1), 1, 1, 1), /wasm matmul: backend was disposed/);
  });
});
