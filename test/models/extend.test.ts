// Issue 17 "adding experts" (MoExtend / PMoE): extension is exact, training moves only the new experts and router rows.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { MoETransformerLM } from '../../src/models/transformer.js';
import { parseModelConfig } from '../../src/models/config.js';
import { extendExperts, extendTrainable } from '../../src/models/extend.js';
import { train } from '../../src/train/trainer.js';
import { ByteTokenizer } from '../../src/data/tokenizer/index.js';
import { Rng } from '../../src/tensor/random.js';
import { noGrad, tensor } from '../../src/tensor/index.js';
import { PhaseInRouter } from '../../src/moe/routers/phase-in.js';
import { tmpDir, tinyConfig } from '../train/helpers.js';

const cfg = { vocab_size: 256, hidden_size: 16, num_hidden_layers: 2, num_attention_heads: 2, max_position_embeddings: 32, num_local_experts: 4, num_experts_per_tok: 2, moe_intermediate_size: 8 };
const ids = Int32Array.from({ length: 24 }, (_, i) => (i * 29 + 3) % 256);
const run = (m: MoETransformerLM) => noGrad(() => m.forward(ids, 1, ids.length, { ctx: { training: false, step: 0, rng: new Rng(0) } }));

test('phase-in router: an offset of -1 is never selected, afterStep raises it to 0 in phaseInSteps steps, offset 0 is plain renormalised top-k', () => {
  const r = new PhaseInRouter({ type: 'phase-in', dModel: 6, numExperts: 4, topK: 2, phaseInSteps: 4 }, new Rng(3));
  const x = tensor(new Rng(5).fillNormal(new Float32Array(60), 3), [10, 6]);
  const ctx = { training: false, step: 0, rng: new Rng(0) };
  // expert 1's row scaled up: it is among the chosen for some tokens without its offset
  for (let i = 0; i < 6; i++) r.gate.weight.data[6 + i] *= 10;
  const plain = r.route(x, ctx);
  r.offset.data[1] = -1;
  const off = r.route(x, ctx);
  if (off.routing.kind !== 'sparse' || plain.routing.kind !== 'sparse') throw new Error('sparse');
  assert.ok(!off.routing.expertIdx.includes(1), 'an expert at offset -1 is never selected');
  assert.ok(plain.routing.expertIdx.includes(1));
  for (let s = 0; s < 3; s++) r.afterStep(new Float64Array(4));
  assert.ok(Math.abs(r.offset.data[1] + 0.25) < 1e-6, `after 3 of 4 steps the offset is -0.25, got ${r.offset.data[1]}`);
  r.afterStep(new Float64Array(4));
  r.afterStep(new Float64Array(4));
  assert.equal(r.offset.data[1], 0);
  assert.deepEqual((r.route(x, ctx).routing as typeof plain.routing).expertIdx, plain.routing.expertIdx);
});

test('extendExperts: right after extension the model computes the old one (copy and fresh init); config and sources', () => {
  const m = new MoETransformerLM(parseModelConfig(cfg), 2).eval();
  const before = run(m);
  for (const init of ['copy', 'fresh'] as const) {
    const { model: x, sources } = extendExperts(m, {
      add: 3,
      init,
      sources: [
        [0, 1, 2],
        [3, 3, 0],
      ],
      seed: 7,
    });
    assert.equal(x.config.num_local_experts, 7);
    assert.equal(x.config.router_type, 'phase-in');
    assert.deepEqual(sources, [
      [0, 1, 2],
      [3, 3, 0],
    ]);
    const after = run(x.eval());
    const d = Math.max(...before.logits.data.map((v, i) => Math.abs(v - after.logits.data[i])));
    assert.ok(d < 1e-5, `${init}: logits changed by ${d}`);
    // the new experts receive no token
    for (const a of after.aux) assert.deepEqual(Array.from(a.aux.metrics.tokensPerExpert).slice(4), [0, 0, 0]);
    if (init === 'copy') {
      const s = x.stateDict();
      const w = s.get('layers.1.block_sparse_moe.experts.w1')!;
      const per = w.data.length / 7;
      assert.deepEqual(w.data.subarray(5 * per, 6 * per), w.data.subarray(3 * per, 4 * per), 'new expert 1 of layer 1 copies expert 3');
      const g = s.get('layers.1.block_sparse_moe.router.gate.weight')!;
      assert.deepEqual(g.data.subarray(6 * 16, 7 * 16), g.data.subarray(0, 16), 'router row of new expert 2 copies expert 0');
    }
  }
  assert.throws(() => extendExperts(m, { add: 0 }), /extend: add must be a positive integer, got 0/);
  assert.throws(() => extendExperts(m, { add: 1, sources: [[9], [0]] }), /sources\[0\] must list 1 experts in \[0, 4\)/);
  const nonorm = new MoETransformerLM(parseModelConfig({ ...cfg, norm_topk_prob: false }), 0);
  assert.throws(() => extendExperts(nonorm, { add: 1 }), /normalize false/);
  assert.throws(() => extendExperts(new MoETransformerLM(parseModelConfig({ ...cfg, router_type: 'switch' }), 0), { add: 1 }), /router_type "switch" is not supported/);
  assert.throws(() => extendExperts(new MoETransformerLM(parseModelConfig({ ...cfg, num_local_experts: 0 }), 0), { add: 1 }), /dense/);
});

test('training an extension: old experts, old router rows and every other weight bit-identical; new experts and rows trained; offsets phased in', async () => {
  const dir = tmpDir('extend');
  try {
    const rc = tinyConfig({ training: { steps: 4, eval_interval: 4, save_interval: 4, eval_batches: 1, batch_size: 2 } });
    const base = new MoETransformerLM(parseModelConfig({ ...rc.model, vocab_size: 256 }), 3);
    const { model: ext } = extendExperts(base, { add: 2, phaseInSteps: 2, seed: 1 });
    const old = ext.stateDict();
    const snapshot = new Map([...old].map(([n, t]) => [n, t.data.slice()]));
    const res = await train({
      config: { ...rc, model: ext.config },
      outDir: path.join(dir, 'run'),
      init: { model: ext, tokenizer: new ByteTokenizer() },
      hooks: { trainable: extendTrainable(4) },
    });
    const after = res.model.stateDict();
    let newMoved = 0;
    for (const [n, v] of snapshot) {
      const a = after.get(n)!.data;
      const perExpert = /block_sparse_moe\.(experts|router)\./.test(n) && after.get(n)!.shape[0] === 6;
      const split = perExpert ? (v.length / 6) * 4 : v.length;
      if (n.endsWith('router.offset')) {
        assert.deepEqual(Array.from(a), [0, 0, 0, 0, 0, 0], 'offsets phased in after 2 steps');
        continue;
      }
      assert.deepEqual(a.subarray(0, split), v.subarray(0, split), `${n}: frozen part changed`);
      if (perExpert && a.subarray(split).some((x, i) => x !== v[split + i])) newMoved++;
    }
    assert.ok(newMoved >= 4, `new experts' slices and router rows trained (${newMoved} tensors moved)`);
    assert.ok(fs.existsSync(path.join(dir, 'run', 'latest.json')));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('moe-ts extend: CLI trains the extension and writes extend.md/json (the untrained row equals the before row)', async () => {
  const { spawnSync } = await import('node:child_process');
  const { fileURLToPath } = await import('node:url');
  const { parseRunConfig } = await import('../../src/models/config.js');
  const { saveModelRun } = await import('../../src/adapt/common.js');
  const dir = tmpDir('extend-cli');
  try {
    const rc = parseRunConfig({ model: cfg, training: { batch_size: 2, seq_len: 16, eval_batches: 1, eval_interval: 100, save_interval: 100, warmup_steps: 0 } });
    saveModelRun(path.join(dir, 'moe'), new MoETransformerLM(rc.model, 2), new ByteTokenizer(), rc);
    const cli = path.join(path.dirname(fileURLToPath(import.meta.url)), '../../src/cli/main.js');
    const args = [
      'extend',
      path.join(dir, 'moe'),
      '--add-experts',
      '1',
      '--data',
      'linux',
      '--steps',
      '2',
      '--eval-data',
      'shakespeare',
      '--batches',
      '1',
      '--calibration',
      '1',
      '--out',
      path.join(dir, 'ext'),
    ];
    const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', env: { ...process.env, MOE_BACKEND: 'js' } });
    assert.equal(r.status, 0, r.stderr);
    const rep = JSON.parse(fs.readFileSync(path.join(dir, 'ext', 'extend.json'), 'utf8'));
    assert.equal(rep.rows.length, 3);
    assert.ok(Math.abs(rep.rows[0].loss - rep.rows[1].loss) < 1e-5, `${rep.rows[0].loss} vs ${rep.rows[1].loss}`);
    assert.equal(rep.sources.length, 2);
    const bad = spawnSync(process.execPath, [cli, 'extend', path.join(dir, 'moe'), '--add-experts', '0', '--data', 'linux', '--out', path.join(dir, 'x')], { encoding: 'utf8' });
    assert.notEqual(bad.status, 0);
    assert.match(bad.stderr, /--add-experts must be an integer >= 1, got "0"/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
