// Issue 17 "distillation MoE -> dense": the loss's gradient, the knowledge-gathering init, a short run lowering the KL.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { MoETransformerLM } from '../../src/models/transformer.js';
import { parseRunConfig } from '../../src/models/config.js';
import { distillationLoss } from '../../src/train/distill.js';
import { initStudent, runDistill } from '../../src/adapt/distill.js';
import { expertUsage } from '../../src/adapt/prune.js';
import { saveModelRun, loadAnyModel } from '../../src/adapt/common.js';
import { ByteTokenizer } from '../../src/data/tokenizer/index.js';
import { Rng } from '../../src/tensor/random.js';
import { tensor } from '../../src/tensor/index.js';
import { gradcheck } from '../helpers/gradcheck.js';
import { tmpDir } from '../train/helpers.js';

test('distillationLoss: value against float64 by hand, gradient against finite differences', () => {
  const N = 3;
  const V = 5;
  const rng = new Rng(4);
  const s = rng.fillNormal(new Float32Array(N * V), 1.5);
  const t = rng.fillNormal(new Float32Array(N * V), 1.5);
  const y = Int32Array.from([1, 4, 0]);
  const temp = 2;
  const alpha = 0.7;
  let kl = 0;
  let ce = 0;
  for (let r = 0; r < N; r++) {
    const row = (a: Float32Array, T: number) => {
      const x = Array.from(a.subarray(r * V, (r + 1) * V), (v) => v / T);
      const lz = Math.log(x.reduce((z, v) => z + Math.exp(v), 0));
      return x.map((v) => v - lz);
    };
    const lt = row(t, temp);
    const ls = row(s, temp);
    kl += lt.reduce((a, v, i) => a + Math.exp(v) * (v - ls[i]), 0) / N;
    ce -= row(s, 1)[y[r]] / N;
  }
  const d = distillationLoss(tensor(s, [N, V]), t, y, { temperature: temp, alpha });
  assert.ok(Math.abs(d.kl - kl) < 1e-5, `kl ${d.kl} vs ${kl}`);
  assert.ok(Math.abs(d.ce - ce) < 1e-5, `ce ${d.ce} vs ${ce}`);
  assert.ok(Math.abs(d.loss.item() - (alpha * temp * temp * kl + (1 - alpha) * ce)) < 1e-5);
  const r = gradcheck('distillationLoss', (x) => distillationLoss(x, t, y, { temperature: temp, alpha }).loss, [tensor(s.slice(), [N, V])]);
  assert.ok(r.worstRatio <= 1);
  // the student equal to the teacher: zero KL (and a zero KL gradient with alpha 1)
  assert.ok(Math.abs(distillationLoss(tensor(t, [N, V]), t, y, { alpha: 1 }).kl) < 1e-6);
  assert.throws(() => distillationLoss(tensor(s, [N, V]), t, y, { temperature: 0 }), /temperature must be a positive number, got 0/);
  assert.throws(() => distillationLoss(tensor(s, [N, V]), t.subarray(1), y), /teacher logits have 14 values/);
});

const model = {
  vocab_size: 256,
  hidden_size: 16,
  num_hidden_layers: 2,
  num_attention_heads: 2,
  max_position_embeddings: 32,
  num_local_experts: 4,
  num_experts_per_tok: 2,
  moe_intermediate_size: 8,
  intermediate_size: 8,
};

test('initStudent: the dense FFN is the router-usage-weighted average of the experts (gather) or the plain average (uniform)', () => {
  const teacher = new MoETransformerLM(parseRunConfig({ model }).model, 3).eval();
  const windows = [Int32Array.from({ length: 16 }, (_, i) => (i * 37 + 5) % 256)];
  const u = expertUsage(teacher, windows).weight;
  for (const init of ['gather', 'uniform'] as const) {
    const st = initStudent(teacher, init, windows).stateDict();
    const src = teacher.stateDict();
    for (const l of [0, 1]) {
      const c = init === 'gather' ? Array.from(u[l], (v) => v / u[l].reduce((a, b) => a + b, 0)) : [0.25, 0.25, 0.25, 0.25];
      const w1 = src.get(`layers.${l}.block_sparse_moe.experts.w1`)!.data; // [E, d, f]
      const w2 = src.get(`layers.${l}.block_sparse_moe.experts.w2`)!.data; // [E, f, d]
      const gate = st.get(`layers.${l}.mlp.gate_proj.weight`)!.data; // [f, d]
      const down = st.get(`layers.${l}.mlp.down_proj.weight`)!.data; // [d, f]
      for (const [j, i] of [
        [0, 0],
        [3, 7],
        [7, 15],
      ]) {
        const a = c.reduce((s, ce, e) => s + ce * w1[e * 128 + i * 8 + j], 0);
        const b = c.reduce((s, ce, e) => s + ce * w2[e * 128 + j * 16 + i], 0);
        assert.ok(Math.abs(gate[j * 16 + i] - a) < 1e-6, `${init} layer ${l} gate[${j}, ${i}]`);
        assert.ok(Math.abs(down[i * 8 + j] - b) < 1e-6, `${init} layer ${l} down[${i}, ${j}]`);
      }
    }
    assert.deepEqual(st.get('embed_tokens.weight')!.data, src.get('embed_tokens.weight')!.data);
  }
});

test('runDistill: a short run lowers KL(teacher || student); the table has teacher, student init and student rows and the gap', async () => {
  const dir = tmpDir('distill');
  try {
    const cfg = parseRunConfig({ model, training: { batch_size: 2, seq_len: 16, eval_batches: 1, eval_interval: 100, save_interval: 100, warmup_steps: 0, lr: 1e-2 } });
    saveModelRun(path.join(dir, 'teacher'), new MoETransformerLM(cfg.model, 2), new ByteTokenizer(), cfg);
    const r = await runDistill({ teacher: path.join(dir, 'teacher'), out: path.join(dir, 'student'), steps: 8, alpha: 1, temperature: 1, sources: ['shakespeare'], batches: 1, calibration: 2 });
    assert.ok(r.klAfter < r.klBefore, `KL ${r.klBefore} -> ${r.klAfter}`);
    assert.equal(r.rows.length, 3);
    assert.equal(r.rows[1].params, r.rows[2].params);
    assert.ok(r.rows[2].params < r.rows[0].params);
    const rep = JSON.parse(fs.readFileSync(path.join(dir, 'student', 'distill.json'), 'utf8'));
    assert.equal(rep.gap[0].domain, 'shakespeare');
    assert.ok(Math.abs(rep.gap[0].gap - (rep.rows[2].loss - rep.rows[0].loss)) < 1e-9);
    assert.ok(fs.existsSync(path.join(dir, 'student', 'latest.json')));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('runDistill of a teacher with LoRA experts (peft): the whole student trains, not only the adapters it inherits', async () => {
  const dir = tmpDir('distill-peft');
  try {
    const peft = { type: 'lora-experts', experts: 2, top_k: 1, rank: 2, targets: ['q_proj', 'v_proj'] };
    const cfg = parseRunConfig({ model: { ...model, peft }, training: { batch_size: 2, seq_len: 16, eval_batches: 1, eval_interval: 100, save_interval: 100, warmup_steps: 0, lr: 1e-2 } });
    const teacher = new MoETransformerLM(cfg.model, 3);
    saveModelRun(path.join(dir, 'teacher'), teacher, new ByteTokenizer(), cfg);
    const r = await runDistill({ teacher: path.join(dir, 'teacher'), out: path.join(dir, 'student'), steps: 3, sources: ['shakespeare'], batches: 1, calibration: 2 });
    assert.equal(r.rows.length, 3);
    const st = loadAnyModel(path.join(dir, 'student')).model;
    assert.equal(st.config.num_local_experts, 0);
    assert.ok(st.config.peft, 'the student keeps the teacher adapters');
    const moved = (a: Float32Array, b: Float32Array) => a.some((v, i) => v !== b[i]);
    const src = teacher.stateDict();
    const got = st.stateDict();
    for (const n of ['embed_tokens.weight', 'layers.0.self_attn.q_proj.weight', 'layers.1.self_attn.k_proj.weight', 'layers.0.self_attn.q_proj.lora_A'])
      assert.ok(moved(got.get(n)!.data, src.get(n)!.data), `${n} trained`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
