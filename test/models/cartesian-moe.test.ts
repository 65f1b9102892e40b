/**
 * CartesianMoE (2024): the pair structure (a token's A-stage sub-expert is shared by every pair
 * (a, b): perturbing it changes exactly the tokens routed to it in stage A), finite-difference
 * gradients through both sub-layers, both sub-layers' records and balancing losses reach the
 * model's forward, and a model trains from a config through the CLI.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import '../../src/kernels/index.js';
import { noGrad, type Tensor } from '../../src/tensor/tensor.js';
import { Rng } from '../../src/tensor/random.js';
import { CartesianMoEFFN } from '../../src/models/ffn/index.js';
import { parseModelConfig } from '../../src/models/config.js';
import { MoETransformerLM } from '../../src/models/transformer.js';
import type { MoELayerConfig } from '../../src/moe/layer.js';
import type { RouterContext, SparseRouting } from '../../src/moe/types.js';
import { gradcheck, randn } from '../helpers/gradcheck.js';
import { tmpDir } from '../train/helpers.js';

const ctx = (): RouterContext => ({ training: false, step: 0, rng: new Rng(9) }) as unknown as RouterContext;
const sub = (E: number, k: number, d: number): MoELayerConfig => ({ dModel: d, numExperts: E, topK: k, experts: { type: 'swiglu', dFF: 6 }, router: { type: 'topk' }, losses: { switch: 0.01 } });

/** Each token's top-1 expert from a sparse routing record. */
function choice(r: SparseRouting, T: number): number[] {
  const out = new Array<number>(T).fill(-1);
  for (let i = 0; i < r.tokenIdx.length; i++) out[r.tokenIdx[i]] = r.expertIdx[i];
  return out;
}

test('CartesianMoE: a perturbed A sub-expert changes exactly the tokens routed to it in stage A, across all their B partners', () => {
  const d = 8;
  const T = 48;
  const ffn = new CartesianMoEFFN(sub(4, 1, d), sub(4, 1, d), 1e-6, new Rng(1));
  const x = randn(new Rng(2), [T, d], false);
  const r0 = noGrad(() => ffn.forward(x, ctx()));
  const [ra, rb] = r0.aux!;
  const a = choice(ra.router.routing as SparseRouting, T);
  const b = choice(rb.router.routing as SparseRouting, T);
  const target = a[0];
  const partners = new Set(b.filter((_, t) => a[t] === target));
  assert.ok(partners.size >= 2, `sub-expert ${target} should serve several pairs, got B partners ${[...partners]}`);
  assert.ok(
    a.some((e) => e !== target),
    'some tokens must choose another A sub-expert',
  );
  // perturb every weight of A sub-expert `target` (rows [target] of the [E, ...] expert tensors)
  for (const [name, p] of ffn.moe_a.namedParameters()) {
    if (!name.startsWith('experts.') || p.shape[0] !== 4) continue;
    const per = p.size / 4;
    for (let i = 0; i < per; i++) p.data[target * per + i] += 0.5 * Math.sin(i + 1);
  }
  const y1 = noGrad(() => ffn.forward(x, ctx())).y;
  for (let t = 0; t < T; t++) {
    let diff = 0;
    for (let j = 0; j < d; j++) diff = Math.max(diff, Math.abs(y1.data[t * d + j] - r0.y.data[t * d + j]));
    if (a[t] === target) assert.ok(diff > 1e-6, `token ${t} (pair ${a[t]},${b[t]}) uses sub-expert ${target}: its output must change`);
    else assert.equal(diff, 0, `token ${t} (pair ${a[t]},${b[t]}) does not use sub-expert ${target}: output must not change`);
  }
});

test('CartesianMoE: the output is sub-layer B of RMSNorm(x + sub-layer A), and finite-difference gradients of input and parameters', () => {
  const ffn = new CartesianMoEFFN(sub(3, 2, 4), sub(2, 1, 4), 1e-6, new Rng(3));
  const x = randn(new Rng(4), [5, 4]);
  const s = noGrad(() => ffn.stages(x, ctx()));
  const xb = noGrad(() =>
    ffn.norm.forward(
      new (x.constructor as new (d: Float32Array, s: number[]) => Tensor)(
        Float32Array.from(x.data, (v, i) => v + s.a.y.data[i]),
        [5, 4],
      ),
    ),
  );
  for (let i = 0; i < xb.size; i++) assert.ok(Math.abs(xb.data[i] - s.xb.data[i]) < 1e-6);
  // B sees a normalised input: unit RMS rows
  for (let t = 0; t < 5; t++) {
    let ms = 0;
    for (let j = 0; j < 4; j++) ms += s.xb.data[t * 4 + j] ** 2 / 4;
    assert.ok(Math.abs(ms - 1) < 1e-3, `row ${t} mean square ${ms}`);
  }
  const report = gradcheck('cartesian-moe', (xi: Tensor) => ffn.forward(xi, ctx()).y, [x, ...ffn.parameters()], { eps: 1e-3, rtol: 3e-2, atol: 3e-3 });
  assert.ok(report.checked > 0);
});

test('CartesianMoE in a model: both sub-layers yield records with finite non-zero balancing losses; bad options name the field', () => {
  const c = parseModelConfig({
    hidden_size: 16,
    num_hidden_layers: 2,
    num_attention_heads: 2,
    num_local_experts: 4,
    num_experts_per_tok: 2,
    moe_intermediate_size: 16,
    router_aux_loss_coef: 0.01,
    ffn_type: 'cartesian-moe',
    ffn_options: { setB: 3, topKB: 1 },
  });
  const m = new MoETransformerLM(c, 0);
  const ids = Int32Array.from({ length: 2 * 8 }, (_, i) => (i * 7) % 50);
  const res = m.forward(ids, 2, 8, { ctx: { training: true, step: 0, rng: new Rng(1) } });
  assert.deepEqual(
    res.aux.map((a) => [a.layer, a.sub, a.aux.metrics.tokensPerExpert.length]),
    [
      [0, 0, 4],
      [0, 1, 3],
      [1, 0, 4],
      [1, 1, 3],
    ],
  );
  for (const a of res.aux) {
    const l = a.aux.losses.switch.item();
    assert.ok(Number.isFinite(l) && l > 0, `layer ${a.layer}.${a.sub} switch loss ${l}`);
  }
  // active: 2 of 4 A sub-experts + 1 of 3 B sub-experts of width 8, not the whole bank
  assert.ok(m.activeParameters() < m.numParameters());
  const base = { hidden_size: 16, num_attention_heads: 2, num_hidden_layers: 1, num_local_experts: 4, ffn_type: 'cartesian-moe' };
  assert.throws(() => new MoETransformerLM(parseModelConfig({ ...base, ffn_options: { setA: 2, topKA: 3 } }), 0), /ffn_options.topKA must be at most setA=2/);
  assert.throws(() => new MoETransformerLM(parseModelConfig({ ...base, ffn_options: { setC: 2 } }), 0), /ffn_options.*setC/);
});

test('CartesianMoE: moe-ts train --config trains a model and writes its results', () => {
  const cli = path.join(path.dirname(fileURLToPath(import.meta.url)), '../../src/cli/main.js');
  const dir = tmpDir('cartesian-moe');
  const cfgPath = path.join(dir, 'cfg.json');
  const model = {
    hidden_size: 16,
    num_hidden_layers: 2,
    num_attention_heads: 2,
    max_position_embeddings: 32,
    num_local_experts: 4,
    num_experts_per_tok: 2,
    moe_intermediate_size: 16,
    ffn_type: 'cartesian-moe',
  };
  fs.writeFileSync(cfgPath, JSON.stringify({ model, training: { steps: 3, batch_size: 2, seq_len: 16, warmup_steps: 1, eval_interval: 3, eval_batches: 1, save_interval: 3 } }));
  const out = path.join(dir, 'run');
  const r = spawnSync(process.execPath, [cli, 'train', '--config', cfgPath, '--out', out, '--quiet'], { encoding: 'utf8', env: { ...process.env, MOE_BACKEND: 'js' }, timeout: 120_000 });
  assert.equal(r.status, 0, r.stderr);
  const log = fs
    .readFileSync(path.join(out, 'log.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  const steps = log.filter((l) => typeof l.loss === 'number');
  assert.ok(steps.length >= 3 && steps.every((l) => Number.isFinite(l.loss as number)));
});
