// Test-time re-routing (R2-T2 2025, per token for text): with the test input itself in the
// reference and k = 1 the routing is its own, bit for bit; a reference that always chose one
// expert pulls every token to it at lambda 1; lambda 0 changes nothing; errors name the field.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { noGrad } from '../../src/index.js';
import { Rng } from '../../src/tensor/random.js';
import { MoETransformerLM } from '../../src/models/transformer.js';
import { parseModelConfig } from '../../src/models/config.js';
import { ByteTokenizer } from '../../src/data/tokenizer/index.js';
import { KnnReroute, type SparseRouting } from '../../src/moe/index.js';
import { buildRerouteReference, referenceWindows, withReroute } from '../../src/adapt/reroute.js';

const CFG = {
  vocab_size: 256,
  hidden_size: 16,
  num_hidden_layers: 2,
  num_attention_heads: 2,
  moe_intermediate_size: 16,
  max_position_embeddings: 48,
  initializer_range: 0.3,
  num_local_experts: 4,
  num_experts_per_tok: 2,
};
const ctx = () => ({ training: false, step: 0, rng: new Rng(0) });
const model = new MoETransformerLM(parseModelConfig(CFG), 11).eval();
const tok = new ByteTokenizer();
const text = 'First Citizen:\nBefore we proceed any further, hear me speak.\nAll:\nSpeak, speak.';
const fwd = (ids: Int32Array) => noGrad(() => model.forward(ids, 1, ids.length, { ctx: ctx() }));
const routes = (r: ReturnType<typeof fwd>) =>
  r.aux.map((a) => a.aux.router.routing as SparseRouting).map((s) => ({ e: Array.from(s.expertIdx), t: Array.from(s.tokenIdx), w: Array.from(s.weights.data) }));

test('the test input in the reference, k = 1: its routing is its own (bit for bit), so are the logits', () => {
  const windows = referenceWindows(tok, text, 24);
  const refs = buildRerouteReference(model, windows, { correctOnly: false });
  assert.deepEqual([...refs.keys()], [0, 1]);
  assert.equal(
    refs.get(0)!.n,
    windows.reduce((s, w) => s + w.length, 0),
  );
  for (const ids of windows) {
    const base = fwd(ids);
    for (const lambda of [0.5, 1]) {
      const rr = withReroute(model, refs, { k: 1, lambda }, () => fwd(ids));
      assert.deepEqual(routes(rr), routes(base), `lambda ${lambda}`);
      assert.deepEqual(rr.logits.data, base.logits.data);
    }
  }
  // a different text does move some routing with k = 1, lambda = 1
  const other = tok.encode('int main(void) { return 0; }');
  assert.notDeepEqual(routes(withReroute(model, refs, { k: 1, lambda: 1 }, () => fwd(other))), routes(fwd(other)));
  for (const m of model.moeLayers()) assert.equal(m.routingOverride, null, 'restored');
});

test('a reference that always chose expert 3 pulls every token to it at lambda 1; lambda 0 is the identity', () => {
  const n = 10;
  const rows = new Rng(2).fillNormal(new Float32Array(n * 16), 1);
  const probs = new Float32Array(n * 4);
  for (let i = 0; i < n; i++) probs[i * 4 + 3] = 1;
  const ref = { rows, probs, n, d: 16, numExperts: 4 };
  const refs = new Map([[1, ref]]);
  const ids = tok.encode('hear me speak');
  const base = fwd(ids);
  const r = withReroute(model, refs, { k: 3, lambda: 1 }, () => fwd(ids));
  const l1 = r.aux.find((a) => a.layer === 1)!.aux.router.routing as SparseRouting;
  for (let t = 0; t < ids.length; t++) {
    const es = Array.from(l1.expertIdx).filter((_, a) => l1.tokenIdx[a] === t);
    assert.equal(es.length, 2);
    assert.ok(es.includes(3), `token ${t}: ${es}`);
  }
  assert.deepEqual(routes(r)[0], routes(base)[0], 'layer 0 has no reference: untouched');
  assert.deepEqual(routes(withReroute(model, refs, { k: 3, lambda: 0 }, () => fwd(ids))), routes(base));
  assert.throws(() => new KnnReroute(ref, { lambda: 2 }), /reroute: lambda must be in \[0, 1\], got 2/);
  assert.throws(() => new KnnReroute(ref, { k: 0 }), /reroute: k must be an integer >= 1/);
  assert.throws(() => withReroute(model, new Map([[1, { ...ref, d: 8, rows: rows.slice(0, n * 8) }]]), {}, () => fwd(ids)), /reroute: the reference has 4 experts x width 8, the layer 4 x 16/);
  assert.throws(() => buildRerouteReference(model, [Int32Array.of(1, 2)]), /no reference token kept \(none predicted correctly/);
});
