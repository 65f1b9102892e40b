/**
 * γ-MoD's ARank (src/models/arank.ts) and the `train --model X --gamma-mod` conversion: the rank of
 * constructed attention maps by hand, a model built so one layer's heads all attend to the first
 * token (ARank 1) while the others stay near uniform (full rank), the lowest-ARank choice, and the
 * CLI path converting a saved base and training it, with the ranks in results.json.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { MoETransformerLM } from '../../src/models/transformer.js';
import { parseModelConfig } from '../../src/models/config.js';
import { singularValues, numericalRank, causalAttentionMap, computeARank, lowestARankLayers, ARANK_TOLERANCE } from '../../src/models/arank.js';
import { calibrationSequences, type GammaModReport } from '../../src/train/gamma-mod.js';
import { ByteTokenizer } from '../../src/data/tokenizer/index.js';
import { loadAnyModel } from '../../src/adapt/common.js';
import { Rng } from '../../src/tensor/random.js';
import { tmpDir, saveTinyBaseRun } from '../train/helpers.js';

const cli = path.join(path.dirname(fileURLToPath(import.meta.url)), '../../src/cli/main.js');
const run = (args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', env: { ...process.env, MOE_BACKEND: 'js' }, timeout: 120_000 });

const square = (T: number, f: (i: number, j: number) => number): Float64Array => {
  const a = new Float64Array(T * T);
  for (let i = 0; i < T; i++) for (let j = 0; j < T; j++) a[i * T + j] = f(i, j);
  return a;
};

test('singular values by hand: a diagonal, a 2 x 2 and a rectangular matrix', () => {
  assert.deepEqual(Array.from(singularValues([0, 0, 3, 0, -5, 0, 2, 0, 0], 3, 3)), [5, 3, 2]);
  // [[3, 0], [4, 5]]: A^T A = [[25, 20], [20, 25]], eigenvalues 45 and 5
  const sv = singularValues([3, 0, 4, 5], 2, 2);
  assert.ok(Math.abs(sv[0] - Math.sqrt(45)) < 1e-12 && Math.abs(sv[1] - Math.sqrt(5)) < 1e-12, String(sv));
  // rank-1 outer product [1, 2, 3]^T [1, 1]: one singular value |u| |v|, one zero
  const r = singularValues([1, 1, 2, 2, 3, 3], 3, 2);
  assert.ok(Math.abs(r[0] - Math.sqrt(14) * Math.SQRT2) < 1e-12 && r[1] < 1e-12);
  assert.throws(() => singularValues([1, 2, 3], 2, 2), /3 entries for 2 x 2/);
});

test('numerical rank of constructed attention maps: uniform causal T, one-hot on the first token 1, identity T', () => {
  for (const T of [8, 128]) {
    assert.equal(
      numericalRank(
        square(T, (i, j) => (j <= i ? 1 / (i + 1) : 0)),
        T,
        T,
      ),
      T,
      `uniform causal, T = ${T}`,
    );
    assert.equal(
      numericalRank(
        square(T, (_i, j) => (j === 0 ? 1 : 0)),
        T,
        T,
      ),
      1,
      `first token, T = ${T}`,
    );
    assert.equal(
      numericalRank(
        square(T, (i, j) => (i === j ? 1 : 0)),
        T,
        T,
      ),
      T,
      `identity, T = ${T}`,
    );
  }
  // every row on the first token or on token 3 (once it exists): two distinct rows, rank 2
  assert.equal(
    numericalRank(
      square(8, (i, j) => (i < 3 ? (j === 0 ? 1 : 0) : j === 3 ? 1 : 0)),
      8,
      8,
    ),
    2,
  );
  // half the rows attend to token 0 only, the rest to themselves: 1 + 4 independent rows
  assert.equal(
    numericalRank(
      square(8, (i, j) => (i < 4 ? (j === 0 ? 1 : 0) : i === j ? 1 : 0)),
      8,
      8,
    ),
    5,
  );
  assert.equal(numericalRank(new Float64Array(16), 4, 4), 0, 'zero matrix');
  // the tolerance is relative: a diagonal with one entry at 1e-4 of the largest counts only above it
  const d = square(3, (i, j) => (i === j ? [1, 0.5, 1e-4][i] : 0));
  assert.equal(numericalRank(d, 3, 3, ARANK_TOLERANCE), 2);
  assert.equal(numericalRank(d, 3, 3, 1e-5), 3);
  assert.throws(() => numericalRank(d, 3, 3, 0), /tolerance must be in \(0, 1\)/);
});

test('causalAttentionMap: softmax over j <= i of q . k / sqrt(Dh); zero queries give the uniform causal map', () => {
  const T = 5;
  const Dh = 4;
  const rng = new Rng(2);
  const k = Float64Array.from({ length: T * Dh }, () => rng.next() - 0.5);
  const A = causalAttentionMap(new Float64Array(T * Dh), k, T, Dh);
  for (let i = 0; i < T; i++) for (let j = 0; j < T; j++) assert.ok(Math.abs(A[i * T + j] - (j <= i ? 1 / (i + 1) : 0)) < 1e-15);
  const q = Float64Array.from({ length: T * Dh }, () => rng.next() - 0.5);
  const B = causalAttentionMap(q, k, T, Dh);
  // row 2 by hand
  const s = [0, 1, 2].map((j) => [0, 1, 2, 3].reduce((a, d) => a + q[2 * Dh + d] * k[j * Dh + d], 0) / 2);
  const z = s.reduce((a, x) => a + Math.exp(x), 0);
  for (let j = 0; j < 3; j++) assert.ok(Math.abs(B[2 * T + j] - Math.exp(s[j]) / z) < 1e-12);
});

/**
 * Three dense layers; layers 0 and 1 write nothing to the residual stream (o_proj and down_proj
 * zero), so layer 2 reads the embeddings. Token 0's embedding is the only one with dim 0; layer 2's
 * keys read only dim 0 and its queries a constant dim 1, on head dims that RoPE (theta 1e12) barely
 * rotates: every query scores the first token hundreds above the rest, so its maps are rank 1.
 */
function sinkModel(): MoETransformerLM {
  const cfg = parseModelConfig({
    vocab_size: 256,
    hidden_size: 16,
    num_hidden_layers: 3,
    num_attention_heads: 2,
    max_position_embeddings: 32,
    num_local_experts: 0,
    intermediate_size: 16,
    rope_theta: 1e12,
  });
  const m = new MoETransformerLM(cfg, 5);
  const sd = m.stateDict();
  for (const l of [0, 1]) for (const n of [`layers.${l}.self_attn.o_proj.weight`, `layers.${l}.mlp.down_proj.weight`]) sd.get(n)!.data.fill(0);
  const emb = sd.get('embed_tokens.weight')!;
  for (let t = 0; t < 256; t++) {
    emb.data[t * 16] = t === 0 ? 1 : 0;
    emb.data[t * 16 + 1] = 1;
  }
  const wq = sd.get('layers.2.self_attn.q_proj.weight')!;
  const wk = sd.get('layers.2.self_attn.k_proj.weight')!;
  wq.data.fill(0);
  wk.data.fill(0);
  for (const h of [0, 1])
    for (const d of [2, 3, 6, 7]) {
      wq.data[(h * 8 + d) * 16 + 1] = 10; // [out, in]: query dim d of head h <- the constant feature
      wk.data[(h * 8 + d) * 16 + 0] = 10; // key dim d of head h <- token 0's feature
    }
  return m;
}

test('computeARank: the layer whose heads all attend to the first token has ARank 1, random layers near T; the conversion picks it', () => {
  const m = sinkModel();
  const rng = new Rng(9);
  const T = 16;
  const seqs = [0, 1, 2].map(() => Int32Array.from({ length: T }, (_, i) => (i === 0 ? 0 : 1 + Math.floor(rng.next() * 255))));
  const r = computeARank(m, seqs);
  assert.equal(r.length, 3);
  assert.equal(r[2].arank, 1);
  assert.deepEqual(r[2].heads, [1, 1]);
  for (const l of [0, 1]) assert.ok(r[l].arank > T - 1, `layer ${l}: ${r[l].arank}`);
  assert.deepEqual(lowestARankLayers(r, 1), [2]);
  assert.equal(lowestARankLayers(r, 2).length, 2);
  assert.ok(lowestARankLayers(r, 2).includes(2));
  assert.equal(m.training, true, 'the training mode is restored');
  // the capture is undone: a forward afterwards is the model's own
  assert.equal(Object.prototype.hasOwnProperty.call(m.layers[0].self_attn, 'forward'), false);
});

test('lowestARankLayers by hand: lowest first, ties to the later layer, ascending output; bad counts and inputs are one-line errors', () => {
  const rs = [5, 2, 7, 2, 3].map((arank, layer) => ({ layer, arank, heads: [arank] }));
  assert.deepEqual(lowestARankLayers(rs, 1), [3]);
  assert.deepEqual(lowestARankLayers(rs, 2), [1, 3]);
  assert.deepEqual(lowestARankLayers(rs, 3), [1, 3, 4]);
  assert.throws(() => lowestARankLayers(rs, 0), /arank layers must be an integer in \[1, 5\]/);
  assert.throws(() => lowestARankLayers(rs, 6), /in \[1, 5\]/);
  const m = sinkModel();
  assert.throws(() => computeARank(m, []), /no calibration sequence/);
  assert.throws(() => computeARank(m, [new Int32Array(4), new Int32Array(5)]), /same length/);
  assert.throws(() => computeARank(m, [new Int32Array(4)], { tolerance: 1 }), /tolerance must be in \(0, 1\)/);
  const mod = new MoETransformerLM(parseModelConfig({ ...m.config, mixture_of_depths: { capacity: 0.5, layers: [1] } }), 1);
  assert.throws(() => computeARank(mod, [new Int32Array(4)]), /already has mixture_of_depths/);
});

test('train --model BASE --gamma-mod: the lowest-ARank layers become γ-MoD layers, ranks in results.json, the converted run trains', () => {
  const dir = tmpDir('gamma-mod');
  try {
    const { cfg, base, baseDir, cfgFile } = saveTinyBaseRun(dir, { layers: 3, extra: { model: { mixture_of_depths: { capacity: 0.25 } } } });
    const out = path.join(dir, 'g');
    const t = run(['train', '--config', cfgFile, '--model', baseDir, '--gamma-mod', '--arank-layers', '2', '--arank-samples', '2', '--arank-seq-len', '16', '--steps', '3', '--out', out, '--quiet']);
    assert.equal(t.status, 0, t.stderr);
    const res = JSON.parse(fs.readFileSync(path.join(out, 'results.json'), 'utf8')) as { steps: number; final: { loss: number }; gamma_mod: GammaModReport };
    assert.equal(res.steps, 3);
    assert.ok(Number.isFinite(res.final.loss));
    const g = res.gamma_mod;
    assert.equal(g.arank.length, 3);
    assert.equal(g.samples, 2);
    assert.equal(g.seqLen, 16);
    // the same calibration windows on the base give the same ranks and so the same two layers
    const seqs = calibrationSequences(cfg, new ByteTokenizer(), 2, 16, 0);
    const ranks = computeARank(base, seqs, { tolerance: g.tolerance });
    assert.deepEqual(
      g.arank.map((r) => r.arank),
      ranks.map((r) => r.arank),
    );
    assert.deepEqual(g.layers, lowestARankLayers(ranks, 2));
    const conv = loadAnyModel(out).model as MoETransformerLM;
    const mod = conv.config.mixture_of_depths!;
    assert.equal(mod.router, 'gamma');
    assert.equal(mod.causal, 'router');
    assert.equal(mod.capacity, 0.25, "the config file's depth fields are kept");
    assert.deepEqual(mod.layers, g.layers);
    assert.deepEqual(
      conv.depthCaps,
      [0, 1, 2].map((i) => (g.layers.includes(i) ? 0.25 : 1)),
    );
    assert.ok(conv.depth_router_shared, 'the shared γ-MoD router exists');
    // a router without --model, and bad option values, are one-line errors
    const noBase = run(['train', '--gamma-mod', '--steps', '1', '--out', path.join(dir, 'x'), '--quiet']);
    assert.notEqual(noBase.status, 0);
    assert.match(noBase.stderr, /--gamma-mod needs --model/);
    const stray = run(['train', '--arank-layers', '1', '--steps', '1', '--out', path.join(dir, 'z'), '--quiet']);
    assert.notEqual(stray.status, 0);
    assert.match(stray.stderr, /--arank-layers applies only with --gamma-mod/);
    const bad = run(['train', '--config', cfgFile, '--model', baseDir, '--gamma-mod', '--arank-layers', '4', '--steps', '1', '--out', path.join(dir, 'y'), '--quiet']);
    assert.notEqual(bad.status, 0);
    assert.match(bad.stderr, /--arank-layers must be an integer in \[1, 3\]/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
