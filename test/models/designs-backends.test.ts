/**
 * Issue 16's designs on every kernel backend that loads here: a whole model's training-mode forward
 * (logits and its own losses) and the gradient of every parameter on wasm and native equal the js
 * backend's. The compute-heavy parts (projections, expert GEMMs, grouped matmuls, attention
 * products, PEER's sub-key scores) go through the backend, so this checks each design's fast path
 * against the plain JS kernels at the model level; the designs' own properties and finite-difference
 * gradients are in their test files (docs/model-families.md has the audit table).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng } from '../../src/tensor/random.js';
import { getBackend, setBackend, createBackend, JsBackend } from '../../src/kernels/index.js';
import type { Backend } from '../../src/tensor/backend.js';
import { parseModelConfig } from '../../src/models/config.js';
import { buildModel } from '../../src/models/build.js';
import { lmLoss } from '../../src/models/transformer.js';
import { RowSparseParameter, denseRowGrad } from '../../src/nn/sparse.js';
import { assertClose } from '../helpers/gradcheck.js';
import { DESIGN_BASE, DESIGN_CONFIGS, designModel } from '../helpers/designs.js';

const B = 2;
const Tn = 8;
const rngIds = new Rng(5);
const ids = Int32Array.from({ length: B * Tn }, () => rngIds.int(DESIGN_BASE.vocab_size));
const targets = Int32Array.from({ length: B * Tn }, (_, i) => ids[(i + 1) % ids.length]);

/** Logits, total loss and every parameter's gradient (dense, row-sparse ones expanded) of one training step's forward/backward. */
function step(extra: Record<string, unknown>): { logits: Float32Array; loss: number; grads: Map<string, Float32Array> } {
  const model = buildModel(parseModelConfig(designModel(extra)), 11);
  model.train();
  const res = model.forward(ids, B, Tn, { ctx: { training: true, step: 0, totalSteps: 10, rng: new Rng(3) } });
  const { loss } = lmLoss(res, targets);
  loss.backward();
  const grads = new Map<string, Float32Array>();
  for (const [name, p] of model.namedParameters()) {
    const g = p instanceof RowSparseParameter ? denseRowGrad(p) : p.grad;
    if (g) grads.set(name, g.slice());
  }
  return { logits: res.logits.data.slice(), loss: loss.item(), grads };
}

const others: { name: string; make: () => Promise<Backend> }[] = [];
for (const name of ['wasm', 'native'] as const) {
  try {
    (await createBackend(name, { threads: 1 })).dispose();
    others.push({ name, make: () => createBackend(name, { threads: 1 }) });
  } catch {
    // not available here: no test for it
  }
}

for (const [design, extra] of Object.entries(DESIGN_CONFIGS)) {
  for (const b of others) {
    test(`${design}: forward and every parameter gradient on ${b.name} equal the js backend`, async () => {
      const prev = getBackend();
      const js = new JsBackend();
      const be = await b.make();
      try {
        setBackend(js);
        const ref = step(extra);
        setBackend(be);
        const got = step(extra);
        assert.ok(ref.grads.size > 0 && Number.isFinite(ref.loss), `${design}: no gradients or a non-finite loss`);
        assertClose(got.logits, ref.logits, 2e-4, 2e-3, `${design} logits`);
        assertClose([got.loss], [ref.loss], 2e-4, 2e-3, `${design} loss`);
        assert.deepEqual([...got.grads.keys()].sort(), [...ref.grads.keys()].sort(), `${design}: the same parameters get gradients`);
        for (const [name, g] of ref.grads) assertClose(got.grads.get(name)!, g, 2e-4, 5e-3, `${design} grad ${name}`);
      } finally {
        setBackend(prev);
        be.dispose();
      }
    });
  }
}
