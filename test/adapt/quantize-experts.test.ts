// Issue 17, low-bit experts (MoQE): only the routed experts change format, and `quantize --experts-only` reports loss vs bits.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { MoETransformerLM } from '../../src/models/transformer.js';
import { parseRunConfig } from '../../src/models/config.js';
import { ByteTokenizer } from '../../src/data/tokenizer/index.js';
import { FFNExperts } from '../../src/moe/experts/ffn.js';
import { DecodeEngine } from '../../src/infer/decode.js';
import { quantizeMatrix, dequantizeMatrix } from '../../src/kernels/quant.js';
import { saveModelRun, formatAdaptTable } from '../../src/adapt/common.js';
import { runQuantizeExperts, parseExpertBits } from '../../src/adapt/quantize-experts.js';
import { ternaryStats } from '../../src/kernels/ternary.js';
import type { QuantFormat, QuantizeOptions } from '../../src/kernels/quant.js';
import { tmpDir } from '../train/helpers.js';
import { quantizedLoss } from '../../src/infer/quality.js';
import { loadCorpusSplits } from '../../src/data/corpus.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const cli = path.join(here, '../../src/cli/main.js');
const cfg = parseRunConfig({
  model: { vocab_size: 256, hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 2, max_position_embeddings: 32, num_local_experts: 4, num_experts_per_tok: 2, moe_intermediate_size: 64 },
  training: { batch_size: 2, seq_len: 16, eval_batches: 1 },
});
const ids = Int32Array.from({ length: 12 }, (_, i) => (i * 37 + 5) % 256);

/** Replace every expert matrix by its round trip through `format`, in the [out, in] row layout the engine quantises. */
function roundTripExperts(m: MoETransformerLM, format: QuantFormat = 'q2_m', qo: QuantizeOptions = {}): void {
  for (const l of m.layers) {
    const ex = l.block_sparse_moe!.experts as FFNExperts;
    const d = ex.dModel;
    const f = ex.dFF;
    for (const [t, rows, cols] of [
      [ex.w1, f, d],
      [ex.w3, f, d],
      [ex.w2, d, f],
    ] as const) {
      if (!t) continue;
      for (let e = 0; e < ex.numExperts; e++) {
        const o = e * rows * cols;
        // stored input-major [cols, rows]: transpose, quantise rows, transpose back
        const w = new Float32Array(rows * cols);
        for (let i = 0; i < cols; i++) for (let j = 0; j < rows; j++) w[j * cols + i] = t.data[o + i * rows + j];
        const back = dequantizeMatrix(quantizeMatrix(w, rows, cols, format, qo));
        for (let i = 0; i < cols; i++) for (let j = 0; j < rows; j++) t.data[o + i * rows + j] = back[j * cols + i];
      }
    }
  }
}

function maxRel(a: Float32Array, b: Float32Array): number {
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < a.length; i++) [diff, scale] = [Math.max(diff, Math.abs(a[i] - b[i])), Math.max(scale, Math.abs(b[i]))];
  return diff / (1 + scale);
}

test('expertQuant quantises the routed experts only: the engine equals f32 on a model whose experts were round-tripped', () => {
  const m = new MoETransformerLM(cfg.model, 3).eval();
  const f32 = new DecodeEngine(m);
  const q2 = new DecodeEngine(m, { expertQuant: 'q2_m' });
  // non-expert weights untouched and still f32; experts at 12 bytes per 32 values
  assert.equal(q2.weightBytes - q2.expertBytes, f32.weightBytes - f32.expertBytes);
  assert.equal(q2.expertParams, f32.expertParams);
  assert.equal(f32.expertBytes, f32.expertParams * 4);
  assert.equal(q2.expertBytes, (f32.expertParams / 32) * 12);
  const ref = new MoETransformerLM(cfg.model, 3).eval();
  roundTripExperts(ref);
  const got = q2.forward(ids, true);
  const want = new DecodeEngine(ref).forward(ids, true);
  const plain = f32.forward(ids, true);
  // left: only the activations' q8_0 rounding inside the experts; the 2-bit weights themselves change the logits far more
  const near = maxRel(got, want);
  const far = maxRel(got, plain);
  assert.ok(near < 0.01, `vs round-tripped experts ${near}`);
  assert.ok(far > 5 * near, `vs f32 experts ${far} (near ${near})`);
  assert.throws(() => new DecodeEngine(m, { expertQuant: 'q5_k' as never }), /expertQuant must be one of/);
});

test('runQuantizeExperts: one row per bits, expert bytes shrink with bits, the rest stays, 8-bit loss ~ f32', () => {
  const dir = tmpDir('qexperts');
  try {
    const run = path.join(dir, 'moe');
    saveModelRun(run, new MoETransformerLM(cfg.model, 4), new ByteTokenizer(), cfg);
    const r = runQuantizeExperts({ model: run, bits: [2, 3, 4, 8], tokens: 48, out: run });
    assert.deepEqual(
      r.table.map((t) => [t.bits, t.format, t.bitsPerWeight]),
      [
        [32, 'f32', 32],
        [2, 'q2_m', 3],
        [3, 'q3_m', 4],
        [4, 'q4_0', 4.5],
        [8, 'q8_0', 8.5],
      ],
    );
    const rest = r.table.map((t) => t.totalBytes - t.expertBytes);
    assert.ok(
      rest.every((x) => x === rest[0]),
      'non-expert bytes are the same in every row',
    );
    assert.deepEqual(
      r.rows[0].domains.map((d) => d.domain),
      ['shakespeare', 'wikitext', 'linux'],
    );
    // one engine per row scores every domain: the same numbers as quantizedLoss's own engine per text
    const m = new MoETransformerLM(cfg.model, 4);
    const c = loadCorpusSplits('shakespeare');
    const valid = c.valid ?? c.train.slice(Math.floor(c.train.length * 0.9));
    const ref = quantizedLoss(m, new ByteTokenizer(), valid, { quants: ['f32', 'q2_m'], expertsOnly: true, maxTokens: 48 });
    assert.deepEqual([r.rows[0].domains[0].loss, r.rows[1].domains[0].loss], [ref[0].loss, ref[1].loss]);
    assert.deepEqual([r.table[0].expertBytes, r.table[1].expertBytes], [ref[0].expertBytes, ref[1].expertBytes]);
    for (let i = 0; i < 3; i++) {
      assert.ok(Math.abs(r.rows[4].domains[i].loss - r.rows[0].domains[i].loss) < 0.02, `8-bit domain ${i}`);
      assert.ok(Number.isFinite(r.rows[1].domains[i].loss));
    }
    const md = fs.readFileSync(r.files!.md, 'utf8');
    assert.equal(md, formatAdaptTable(JSON.parse(fs.readFileSync(r.files!.json, 'utf8'))));
    assert.match(md, /\| experts 2-bit \(q2_m\), rest f32 \| [\d.]+ \| [\d.]+ \| [\d.]+ \| [\d.]+ \| 3\.00 \| [\d,]+ \| [\d,]+ \|/);
    assert.throws(() => runQuantizeExperts({ model: run, bits: [5] }), /--bits must be among 2, 3, 4, 8, ternary, ternary:Z, ternary-gptq, ternary-gptq:Z \(Z in \[0, 1\)\), got 5/);
    assert.throws(() => runQuantizeExperts({ model: run, bits: [2], rest: 'q4_0' }), /--rest must be f32 or q8_0/);
    const dense = path.join(dir, 'dense');
    saveModelRun(dense, new MoETransformerLM({ ...cfg.model, num_local_experts: 0 }, 1), new ByteTokenizer(), cfg);
    assert.throws(() => runQuantizeExperts({ model: dense, bits: [2] }), /is a dense model/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('expertQuant tq_e: the engine decodes the ternary experts on the fly and equals f32 on a model whose experts were round-tripped', () => {
  for (const minZeros of [undefined, 0.8]) {
    const qo = minZeros === undefined ? {} : { minZeros };
    const m = new MoETransformerLM(cfg.model, 3).eval();
    const f32 = new DecodeEngine(m);
    const tq = new DecodeEngine(m, { expertQuant: 'tq_e', expertQuantOptions: qo });
    assert.equal(tq.weightBytes - tq.expertBytes, f32.weightBytes - f32.expertBytes);
    // 2 layers x 4 experts x (w1, w3, w2), each stream counted in expertBytes
    assert.equal(tq.ternaryExperts.length, 24);
    assert.equal(
      tq.ternaryExperts.reduce((s, b) => s + b.length, 0),
      tq.expertBytes,
    );
    if (minZeros)
      for (const b of tq.ternaryExperts) {
        const st = ternaryStats(b);
        assert.ok(st.zeros >= minZeros * st.rows * st.cols, `${st.zeros} zeros of ${st.rows * st.cols}`);
      }
    const ref = new MoETransformerLM(cfg.model, 3).eval();
    roundTripExperts(ref, 'tq_e', qo);
    const got = tq.forward(ids, true);
    const want = new DecodeEngine(ref).forward(ids, true);
    const plain = f32.forward(ids, true);
    // the tq_e kernel takes f32 activations: only the summation order differs
    const near = maxRel(got, want);
    assert.ok(near < 1e-5, `vs round-tripped experts ${near}`);
    assert.ok(maxRel(got, plain) > 1000 * near, 'ternary experts change the logits');
  }
  assert.equal(new DecodeEngine(new MoETransformerLM(cfg.model, 3), { expertQuant: 'q2_m' }).ternaryExperts.length, 0);
  // given expert matrices are used as they are (and must be in expertQuant); the inputs hook sees x [m, d] and h [m, dFF]
  const m = new MoETransformerLM(cfg.model, 3).eval();
  const zero = (rows: number, cols: number) => quantizeMatrix(new Float32Array(rows * cols), rows, cols, 'tq_e');
  const seen: number[] = [];
  const eng = new DecodeEngine(m, {
    expertQuant: 'tq_e',
    expertWeights: (l, e, w, rows, cols) => (l === 0 ? zero(rows, cols) : null),
    onExpertInputs: (l, e, x, h, n) => seen.push(l, x.length / n, h.length / n),
  });
  assert.ok(eng.ternaryExperts.slice(0, 12).every((b) => ternaryStats(b).zeros === ternaryStats(b).rows * ternaryStats(b).cols));
  assert.ok(eng.ternaryExperts.slice(12).some((b) => ternaryStats(b).zeros < ternaryStats(b).rows * ternaryStats(b).cols));
  eng.forward(ids);
  assert.ok(seen.length > 0);
  for (let i = 0; i < seen.length; i += 3) assert.deepEqual(seen.slice(i + 1, i + 3), [32, 64]);
  assert.throws(() => new DecodeEngine(m, { expertQuant: 'q2_m', expertWeights: (l, e, w, rows, cols) => zero(rows, cols) }), /given expert w1 is tq_e, expertQuant is q2_m/);
});

test('parseExpertBits: numbers, ternary and ternary:Z; anything else is a one-line error', () => {
  assert.deepEqual(parseExpertBits(4), { format: 'q4_0' });
  assert.deepEqual(parseExpertBits('2'), { format: 'q2_m' });
  assert.deepEqual(parseExpertBits('ternary'), { format: 'tq_e' });
  assert.deepEqual(parseExpertBits('ternary:0.9'), { format: 'tq_e', minZeros: 0.9 });
  assert.deepEqual(parseExpertBits('ternary:0'), { format: 'tq_e', minZeros: 0 });
  assert.deepEqual(parseExpertBits('ternary-gptq'), { format: 'tq_e', gptq: true });
  assert.deepEqual(parseExpertBits('ternary-gptq:0.5'), { format: 'tq_e', minZeros: 0.5, gptq: true });
  for (const bad of ['ternary:1', 'ternary:1.5', 'ternary:', 'ternary:x', 'tern', '32', '1.5', 'ternary-gptq:1', 'gptq'])
    assert.throws(
      () => parseExpertBits(bad),
      new RegExp(`--bits must be among 2, 3, 4, 8, ternary, ternary:Z, ternary-gptq, ternary-gptq:Z \\(Z in \\[0, 1\\)\\), got "${bad.replace('.', '\\.')}"`),
      bad,
    );
});

test('runQuantizeExperts with ternary rows: real compressed bits per weight, zero fraction, entropy; more zeros, fewer bits', () => {
  const dir = tmpDir('qexperts-tq');
  try {
    const run = path.join(dir, 'moe');
    const model = new MoETransformerLM(cfg.model, 4);
    saveModelRun(run, model, new ByteTokenizer(), cfg);
    const r = runQuantizeExperts({ model: run, bits: [2, 'ternary', 'ternary:0.9', 'ternary-gptq'], tokens: 48, calibration: 64, sources: ['shakespeare'] });
    assert.deepEqual(
      r.table.map((t) => [t.bits, t.format]),
      [
        [32, 'f32'],
        [2, 'q2_m'],
        ['ternary', 'tq_e'],
        ['ternary:0.9', 'tq_e'],
        ['ternary-gptq', 'tq_e'],
      ],
    );
    // GPTQ's streams are other trits than the plain quantiser's, and the engine scored them
    assert.notEqual(r.table[4].expertBytes, r.table[2].expertBytes);
    assert.notEqual(r.rows[4].loss, r.rows[2].loss);
    assert.match(r.rows[4].label, /experts ternary \(tq_e, GPTQ\), rest f32/);
    const eng = new DecodeEngine(model, { capacity: 1, expertQuant: 'tq_e' });
    const params = eng.expertParams;
    const [, , t0, t9] = r.table;
    // the measured bits are the bytes of the streams (scales, tables and headers included)
    assert.equal(
      t0.expertBytes,
      eng.ternaryExperts.reduce((s, b) => s + b.length, 0),
    );
    assert.equal(t0.bitsPerWeight, (8 * t0.expertBytes) / params);
    const s0 = t0.ternary!;
    const s9 = t9.ternary!;
    assert.ok(Math.abs(s0.zeroFraction + s0.plusFraction + s0.minusFraction - 1) < 1e-12);
    assert.ok(s9.zeroFraction >= 0.9 && s9.zeroFraction > s0.zeroFraction);
    assert.ok(t9.bitsPerWeight < t0.bitsPerWeight, `${t9.bitsPerWeight} vs ${t0.bitsPerWeight}`);
    // the code itself is sub-1-bit; rows of 32 (hidden 32) make the f16 scales alone 0.5 bit per weight of w1/w3
    assert.ok(s9.streamBitsPerWeight < 1, `stream ${s9.streamBitsPerWeight}`);
    assert.ok(Math.abs(s0.streamBitsPerWeight + s0.overheadBitsPerWeight - t0.bitsPerWeight) < 1e-9);
    for (const s of [s0, s9]) {
      const p = [s.zeroFraction, s.plusFraction, s.minusFraction];
      assert.ok(Math.abs(s.entropy + p.reduce((a, x) => a + (x ? x * Math.log2(x) : 0), 0)) < 1e-12);
      assert.ok(s.streamBitsPerWeight < s.entropy + 0.1, `Huffman stream ${s.streamBitsPerWeight} near the entropy ${s.entropy}`);
    }
    const md = formatAdaptTable(r);
    assert.match(md, /\| experts ternary \(tq_e\), rest f32 \| [\d.]+ \| [\d.]+ \| [\d.]+ \| [\d,]+ \| [\d,]+ \| [\d.]+% \| [\d.]+ \|/);
    assert.match(md, /\| experts ternary \(tq_e, >= 0.9 zeros\), rest f32 \| /);
    assert.match(md, /\| experts 2-bit \(q2_m\), rest f32 \| [\d.]+ \| [\d.]+ \| 3\.00 \| [\d,]+ \| [\d,]+ \| - \| - \|/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('moe-ts quantize RUN --experts-only prints the table and writes it next to the run', () => {
  const dir = tmpDir('qexperts-cli');
  try {
    const run = path.join(dir, 'moe');
    saveModelRun(run, new MoETransformerLM(cfg.model, 5), new ByteTokenizer(), cfg);
    const p = spawnSync(process.execPath, [cli, 'quantize', run, '--experts-only', '--bits', '2', '8', 'ternary', '--rest', 'q8_0', '--data', 'shakespeare', '--tokens', '32'], {
      encoding: 'utf8',
      timeout: 120_000,
    });
    assert.equal(p.status, 0, p.stderr);
    assert.match(p.stdout, /experts 2-bit \(q2_m\), rest q8_0/);
    assert.match(p.stdout, /experts 8-bit \(q8_0\), rest q8_0/);
    assert.match(p.stdout, /\| experts ternary \(tq_e\), rest q8_0 \| [\d.]+ \| [\d.]+ \| [\d.]+ \| [\d,]+ \| [\d,]+ \| [\d.]+% \| [\d.]+ \|/);
    assert.ok(fs.existsSync(path.join(run, 'quantize-experts.md')));
    const bad = spawnSync(process.execPath, [cli, 'quantize', run, '--experts-only', '--bits', '5'], { encoding: 'utf8', timeout: 60_000 });
    assert.notEqual(bad.status, 0);
    assert.match(bad.stderr, /--bits must be among 2, 3, 4, 8, ternary, ternary:Z, ternary-gptq, ternary-gptq:Z \(Z in \[0, 1\)\), got "5"/);
    const bad2 = spawnSync(process.execPath, [cli, 'quantize', run, '--experts-only', '--bits', 'ternary:2'], { encoding: 'utf8', timeout: 60_000 });
    assert.notEqual(bad2.status, 0);
    assert.match(bad2.stderr, /got "ternary:2"/);
    const bad3 = spawnSync(process.execPath, [cli, 'quantize', run, '--experts-only', '--bits', 'ternary-gptq', '--calibration', '1'], { encoding: 'utf8', timeout: 60_000 });
    assert.notEqual(bad3.status, 0);
    assert.match(bad3.stderr.trim(), /^[^\n]*--calibration[^\n]*$/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
