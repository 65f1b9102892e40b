/**
 * PEER (Mixture of A Million Experts, 2024): product-key top-k equals brute-force top-k over all N
 * experts, the layer equals a float64 reference over the retrieved experts, finite-difference
 * gradients of every parameter and the input, gradients and optimizer updates touch only the
 * retrieved rows, and a model with PEER FFNs trains and round-trips through a checkpoint.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import '../../src/kernels/index.js';
import { noGrad } from '../../src/tensor/tensor.js';
import { Rng } from '../../src/tensor/random.js';
import { topkIndices } from '../../src/tensor/index.js';
import { AdamW, clipGradNorm, denseRowGrad, accumulateRowGrad, RowSparseParameter, type Parameter } from '../../src/nn/index.js';
import { PEERLayer, productKeyTopK } from '../../src/models/ffn/index.js';
import { parseModelConfig, parseRunConfig } from '../../src/models/config.js';
import { MoETransformerLM } from '../../src/models/transformer.js';
import { estimateMemory } from '../../src/models/memory.js';
import { TrainSession } from '../../src/train/session.js';
import { checkpointFromBytes } from '../../src/io/checkpoint-bytes.js';
import { generate, inferenceModelFromCheckpoint } from '../../src/infer/generate.js';
import { DecodeEngine } from '../../src/infer/decode.js';
import { randn } from '../helpers/gradcheck.js';

test('product-key top-k equals brute-force top-k over all n^2 experts, in order', () => {
  const rng = new Rng(1);
  for (const [n, k] of [
    [8, 3],
    [16, 5],
    [7, 7],
  ]) {
    const rows = 40;
    const s1 = rng.fillNormal(new Float32Array(rows * n), 1);
    const s2 = rng.fillNormal(new Float32Array(rows * n), 1);
    const got = productKeyTopK(s1, s2, rows, n, k);
    const all = new Float32Array(rows * n * n);
    for (let r = 0; r < rows; r++) for (let a = 0; a < n; a++) for (let b = 0; b < n; b++) all[r * n * n + a * n + b] = s1[r * n + a] + s2[r * n + b];
    const brute = topkIndices(all, rows, n * n, k);
    for (let i = 0; i < rows * k; i++) {
      assert.equal(got.a[i] * n + got.b[i], brute[i], `row ${Math.floor(i / k)} rank ${i % k}`);
      assert.equal(got.scores[i], all[Math.floor(i / k) * n * n + brute[i]]);
    }
  }
  assert.throws(() => productKeyTopK(new Float32Array(4), new Float32Array(4), 1, 4, 5), /k=5 exceeds the 4 sub-keys/);
});

const cfg = { dModel: 6, numExperts: 25, heads: 2, topK: 3, keyDim: 4, activation: 'gelu' as const };

/** The layer in float64 from its parameters: every expert's full key, brute-force top-k, softmax gates, act(u.x) v. */
function reference(layer: PEERLayer, x: Float32Array, T: number): { y: Float64Array; experts: number[][] } {
  const { dModel: d, heads: H, topK: k, keyDim: dk, subKeys: n, numExperts: N } = layer;
  const dk2 = dk / 2;
  const W = layer.query.weight.data;
  const y = new Float64Array(T * d);
  const experts: number[][] = [];
  const gelu = (z: number) => 0.5 * z * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (z + 0.044715 * z ** 3)));
  for (let t = 0; t < T; t++)
    for (let h = 0; h < H; h++) {
      const q = Array.from({ length: dk }, (_, c) => {
        let s = 0;
        for (let i = 0; i < d; i++) s += W[(h * dk + c) * d + i] * x[t * d + i];
        return s;
      });
      const scores = Array.from({ length: N }, (_, e) => {
        const a = Math.floor(e / n);
        const b = e % n;
        let s = 0;
        for (let c = 0; c < dk2; c++) s += q[c] * layer.sub_keys1.data[a * dk2 + c] + q[dk2 + c] * layer.sub_keys2.data[b * dk2 + c];
        return s;
      });
      const top = scores
        .map((s, e) => [s, e])
        .sort((p, r) => r[0] - p[0])
        .slice(0, k);
      experts.push(top.map((p) => p[1]));
      const m = top[0][0];
      const z = top.reduce((s, p) => s + Math.exp(p[0] - m), 0);
      for (const [s, e] of top) {
        let dot = 0;
        for (let i = 0; i < d; i++) dot += layer.down.data[e * d + i] * x[t * d + i];
        const c = (Math.exp(s - m) / z) * gelu(dot);
        for (let i = 0; i < d; i++) y[t * d + i] += c * layer.up.data[e * d + i];
      }
    }
  return { y, experts };
}

test('PEER retrieves the brute-force top-k experts per head and equals the float64 reference', () => {
  const layer = new PEERLayer(cfg, new Rng(2));
  const T = 5;
  const x = randn(new Rng(3), [T, cfg.dModel], false);
  const y = noGrad(() => layer.forward(x).y);
  const ref = reference(layer, x.data, T);
  const got = layer.lastRetrieval!;
  for (let r = 0; r < T * cfg.heads; r++) assert.deepEqual(Array.from(got.experts.subarray(r * cfg.topK, (r + 1) * cfg.topK)), ref.experts[r], `row ${r}`);
  for (let i = 0; i < y.size; i++) assert.ok(Math.abs(y.data[i] - ref.y[i]) < 1e-5, `y[${i}] ${y.data[i]} vs ${ref.y[i]}`);
});

test('PEER gradients match finite differences for the input, the query, both sub-key sets and the expert rows', () => {
  const layer = new PEERLayer(cfg, new Rng(4));
  const T = 4;
  const x = randn(new Rng(5), [T, cfg.dModel], true);
  const wOut = new Rng(6).fillNormal(new Float32Array(T * cfg.dModel), 1);
  const loss = (): number => {
    const y = noGrad(() => layer.forward(x).y);
    let s = 0;
    for (let i = 0; i < y.size; i++) s += y.data[i] * wOut[i];
    return s;
  };
  const y = layer.forward(x).y;
  y.backward(wOut);
  const checks: [string, Float32Array, Float32Array][] = [
    ['x', x.data, x.grad!],
    ['query', layer.query.weight.data, layer.query.weight.grad!],
    ['sub_keys1', layer.sub_keys1.data, layer.sub_keys1.grad!],
    ['sub_keys2', layer.sub_keys2.data, layer.sub_keys2.grad!],
    ['down', layer.down.data, denseRowGrad(layer.down)],
    ['up', layer.up.data, denseRowGrad(layer.up)],
  ];
  const eps = 1e-3;
  for (const [name, data, grad] of checks) {
    assert.ok(grad, `${name} has a gradient`);
    let nonzero = 0;
    for (let i = 0; i < data.length; i++) {
      const v = data[i];
      data[i] = v + eps;
      const lp = loss();
      data[i] = v - eps;
      const lm = loss();
      data[i] = v;
      const num = (lp - lm) / (2 * eps);
      assert.ok(Math.abs(num - grad[i]) <= 3e-3 + 2e-2 * Math.abs(num), `${name}[${i}]: analytic ${grad[i]} vs numeric ${num}`);
      if (grad[i] !== 0) nonzero++;
    }
    assert.ok(nonzero > 0, `${name}: some gradient is non-zero`);
  }
});

test('PEER: backward and AdamW touch only the retrieved experts rows (row-sparse gradient, lazy update)', () => {
  const big = { ...cfg, numExperts: 400, topK: 2 };
  const layer = new PEERLayer(big, new Rng(7));
  const x = randn(new Rng(8), [3, cfg.dModel], false);
  const before = layer.down.data.slice();
  const beforeUp = layer.up.data.slice();
  const opt = new AdamW(layer.parameters(), { lr: 0.1, weightDecay: 0.1 });
  layer.forward(x).y.backward(new Rng(9).fillNormal(new Float32Array(3 * cfg.dModel), 1));
  const retrieved = [...new Set(layer.lastRetrieval!.experts)].sort((a, b) => a - b);
  assert.equal(layer.down.grad, null, 'no dense gradient');
  assert.deepEqual(
    [...layer.down.rowGrad!.rows].sort((a, b) => a - b),
    retrieved,
  );
  assert.ok(retrieved.length <= 3 * big.heads * big.topK && retrieved.length < big.numExperts / 10);
  const norm = clipGradNorm(layer.parameters(), 1e9);
  let ss = 0;
  for (const p of layer.parameters()) for (const g of [p.grad, p instanceof RowSparseParameter ? p.rowGrad!.values : null]) for (const v of g ?? []) ss += v * v;
  assert.ok(Math.abs(norm - Math.sqrt(ss)) < 1e-4 * norm, 'clipGradNorm counts the row gradients');
  opt.step();
  const d = cfg.dModel;
  for (let e = 0; e < big.numExperts; e++) {
    const changed = layer.down.data.subarray(e * d, (e + 1) * d).some((v, i) => v !== before[e * d + i]);
    const changedUp = layer.up.data.subarray(e * d, (e + 1) * d).some((v, i) => v !== beforeUp[e * d + i]);
    assert.equal(changed, retrieved.includes(e), `down row ${e}`);
    assert.equal(changedUp, retrieved.includes(e), `up row ${e}`);
  }
  const m = opt.getState().m[layer.parameters().indexOf(layer.down as Parameter)];
  for (let e = 0; e < big.numExperts; e++)
    if (!retrieved.includes(e))
      assert.ok(
        m.subarray(e * d, (e + 1) * d).every((v) => v === 0),
        `moment of untouched row ${e}`,
      );
  opt.zeroGrad();
  assert.equal(layer.down.rowGrad, null);
});

test('row gradients of two backward passes merge by row', () => {
  const p = new RowSparseParameter(new Float32Array(8), [4, 2]);
  accumulateRowGrad(p, Int32Array.from([1, 3]), Float32Array.from([1, 2, 3, 4]));
  accumulateRowGrad(p, Int32Array.from([3, 0]), Float32Array.from([10, 20, 5, 6]));
  assert.deepEqual(Array.from(denseRowGrad(p)), [5, 6, 1, 2, 0, 0, 13, 24]);
  assert.throws(() => accumulateRowGrad(p, Int32Array.from([0]), new Float32Array(3)), /3 values for 1 rows of width 2/);
});

test('PEER config errors name the field', () => {
  const base = { hidden_size: 16, num_attention_heads: 2, num_hidden_layers: 1, num_local_experts: 4, ffn_type: 'peer' };
  const build = (o: Record<string, unknown>) => new MoETransformerLM(parseModelConfig({ ...base, ffn_options: o }), 0);
  assert.throws(() => build({ numExperts: 20 }), /ffn_options.numExperts.*perfect square, got 20/);
  assert.throws(() => build({ numExperts: 16, topK: 5 }), /ffn_options.topK.*at most sqrt\(numExperts\) \(4\), got 5/);
  assert.throws(() => build({ keyDim: 5 }), /ffn_options.keyDim.*even/);
  assert.throws(() => build({ bogus: 1 }), /bogus/);
  assert.throws(() => parseModelConfig({ ...base, ffn_type: 'nope' }), /ffn_type: must be one of .*peer/);
  assert.throws(() => parseModelConfig({ ...base, num_local_experts: 0 }), /ffn_type: replaces the MoE FFN layers, but num_local_experts is 0/);
  // the memory estimate counts the pool before anything is allocated: 2 N d floats per layer
  const est = estimateMemory(parseModelConfig({ ...base, ffn_options: { numExperts: 1048576 } }));
  assert.ok(est.parameters > 2 * 1048576 * 16 && est.parameters < 2.1 * 1048576 * 16, `${est.parameters}`);
});

test('a model with PEER FFNs trains, counts only retrieved experts as active, checkpoints and generates the same text after loading', () => {
  const TEXT = 'First Citizen:\nBefore we proceed any further, hear me speak.\n'.repeat(40);
  const options = { numExperts: 256, heads: 2, topK: 4 };
  const run = parseRunConfig({
    model: { hidden_size: 16, num_hidden_layers: 2, num_attention_heads: 2, num_local_experts: 4, ffn_type: 'peer', ffn_options: options },
    training: { steps: 12, batch_size: 2, seq_len: 16, warmup_steps: 1, lr: 1e-2 },
    data: { sources: ['shakespeare'] },
  });
  const s = new TrainSession(run, [TEXT]);
  const model = s.model as MoETransformerLM;
  assert.ok(model.layers.every((l) => l.ffn_block instanceof PEERLayer));
  const total = model.numParameters();
  const active = model.activeParameters();
  assert.equal(total - active, 2 * 2 * (256 - 2 * 4) * 16, 'active = total minus the unretrieved experts of both layers');
  const first = s.trainStep().loss;
  let last = first;
  for (let i = 0; i < 11; i++) last = s.trainStep().loss;
  assert.ok(last < first, `loss ${first} -> ${last}`);
  const ck = checkpointFromBytes(s.checkpointBytes(), undefined, 'peer.safetensors');
  assert.deepEqual(ck.state.config.model.ffn_options, options);
  const loaded = inferenceModelFromCheckpoint(ck, 'peer.safetensors');
  const text = (m: typeof loaded) => generate(m.model, m.tokenizer, 'First', { maxNewTokens: 10, temperature: 0 }).text;
  assert.equal(text(loaded), text({ ...loaded, model: s.model }));
  // the fast decode path runs PEER through its own module: same logits as the eager forward
  model.eval();
  assert.equal(DecodeEngine.unsupported(model), null);
  assert.ok(new DecodeEngine(model).selfCheck() < 1e-4);
});
