/**
 * Mixture-of-Depths (Raposo et al. 2024) with p-MoD's and gamma-MoD's options: the per-layer
 * capacities, the top-k choice per sequence and the skip path, finite-difference gradients into
 * the router and the causal predictor, KV-cached generation equal to the full causal forward,
 * and a model that trains, checkpoints and generates.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import '../../src/kernels/index.js';
import { noGrad } from '../../src/tensor/tensor.js';
import { Rng } from '../../src/tensor/random.js';
import * as T from '../../src/tensor/index.js';
import { parseModelConfig, parseRunConfig, type ModelConfig } from '../../src/models/config.js';
import { MoETransformerLM, lmLoss } from '../../src/models/transformer.js';
import { depthCapacities, selectDepthTopK } from '../../src/models/depth.js';
import { DecodeEngine } from '../../src/infer/decode.js';
import { TrainSession } from '../../src/train/session.js';
import { checkpointFromBytes } from '../../src/io/checkpoint-bytes.js';
import { generate, inferenceModelFromCheckpoint } from '../../src/infer/generate.js';
import { ByteTokenizer } from '../../src/data/tokenizer/index.js';
import { gradcheck, assertClose } from '../helpers/gradcheck.js';

const cfgOf = (mod: Record<string, unknown>, extra: Record<string, unknown> = {}): ModelConfig =>
  parseModelConfig({ hidden_size: 8, num_hidden_layers: 1, num_attention_heads: 2, num_local_experts: 0, intermediate_size: 8, vocab_size: 16, mixture_of_depths: { every: 1, ...mod }, ...extra });
const ctx = (training: boolean) => ({ ctx: { training, step: 0, rng: new Rng(0) } });

test('capacities per layer: every other layer, explicit layers and capacities, p-MoD shifted cosine; bad fields name themselves', () => {
  const L = (mod: Record<string, unknown>, n = 4) => depthCapacities(parseModelConfig({ num_hidden_layers: n, mixture_of_depths: mod }));
  assert.deepEqual(L({}), [1, 0.125, 1, 0.125]);
  assert.deepEqual(L({ layers: [0, 2], capacity: 0.5 }), [0.5, 1, 0.5, 1]);
  assert.deepEqual(L({ capacities: [1, 0.25, 0.5, 1] }), [1, 0.25, 0.5, 1]);
  // capacity + cos(pi l / 3) / 2 over 4 layers: 0.75 (>= max 0.7: full), 0.5, 0, -0.25 (floored)
  const pmod = L({ every: 1, schedule: 'shifted-cosine', capacity: 0.25, max_capacity: 0.7, min_capacity: 0.05 });
  assert.equal(pmod[0], 1);
  assertClose(pmod.slice(1), [0.5, 0.05, 0.05], 1e-9, 0, 'p-MoD ratios');
  assert.throws(() => L({ capacities: [0.5] }), /mixture_of_depths\.capacities: needs one entry per layer \(4\), got 1/);
  assert.throws(() => L({ capacity: 0 }), /mixture_of_depths\.capacity/);
  assert.throws(() => L({ layers: [7] }), /mixture_of_depths\.layers\[0\]: layer 7 does not exist/);
  assert.throws(() => L({ router: 'nope' }), /mixture_of_depths\.router/);
  assert.throws(() => new MoETransformerLM(cfgOf({}, { attention_type: 'moh', attention_options: { sharedHeads: 1, topK: 1 } }), 0), /mixture_of_depths needs attention_type "standard"/);
});

/** The skip path of a 1-layer model: logits of h (times s) through the final norm and the tied head. */
function skipLogits(m: MoETransformerLM, ids: Int32Array, s?: Float32Array): Float32Array {
  return noGrad(() => {
    let h = m.embed_tokens.forward(ids);
    if (s) h = T.mul(h, new T.Tensor(s, [ids.length, 1]));
    return T.linear(m.norm.forward(h), m.embed_tokens.weight).data;
  });
}

test('training routes the top capacity fraction of each sequence by router logit; skipped tokens pass through unchanged (STRing: scaled by their weight)', () => {
  const B = 2;
  const Tn = 8;
  const ids = Int32Array.from({ length: B * Tn }, (_, i) => (i * 7 + 3) % 16);
  for (const symmetric of [false, true]) {
    const m = new MoETransformerLM(cfgOf({ capacity: 0.25, symmetric }, { rms_norm_eps: 1 }), 3);
    // larger block weights make a chosen token's update plainly visible in its logits
    for (const p of m.layers[0].parameters()) if (p !== m.layers[0].depth_router!.weight) p.data.forEach((_, i, a) => (a[i] *= 20));
    m.train();
    const res = noGrad(() => m.forward(ids, B, Tn, ctx(true)));
    assert.equal(res.depth?.length, 1);
    const rows = res.depth![0].rows;
    // the router logits recomputed apart: r = e w_r on the embeddings (layer 0's input)
    const r = noGrad(() => T.linear(m.embed_tokens.forward(ids), m.layers[0].depth_router!.weight).data);
    const want = selectDepthTopK(r, B, Tn, 2).rows;
    assert.deepEqual(Array.from(rows), Array.from(want));
    for (let b = 0; b < B; b++) {
      const mine = Array.from(rows).filter((x) => Math.floor(x / Tn) === b);
      const order = Array.from({ length: Tn }, (_, t) => b * Tn + t).sort((x, y) => r[y] - r[x]);
      assert.deepEqual(mine.sort(), order.slice(0, 2).sort(), `sequence ${b}: the two highest logits`);
    }
    const s = symmetric ? Float32Array.from(r, (v) => 1 / (1 + Math.exp(-v))) : undefined;
    const skip = skipLogits(m, ids, s);
    for (let t = 0; t < B * Tn; t++) {
      const got = res.logits.data.subarray(t * 16, t * 16 + 16);
      if (rows.includes(t))
        assert.ok(
          got.some((v, j) => Math.abs(v - skip[t * 16 + j]) > 1e-4),
          `chosen row ${t} is updated`,
        );
      else assertClose(got, skip.subarray(t * 16, t * 16 + 16), 1e-5, 1e-5, `skipped row ${t}${symmetric ? ' (scaled)' : ''}`);
    }
  }
});

test('gradients into the router (through the weighted update), the block and the causal predictor match finite differences', () => {
  for (const [mod, name] of [
    [{ capacity: 0.5, causal: 'predictor', aux_loss_coef: 1 }, 'linear router + predictor'],
    [{ capacity: 0.5, causal: 'router', weight: 'tanh', aux_loss_coef: 1 }, 'router rule, TanhNorm'],
    [{ capacity: 0.5, router: 'gamma', aux_loss_coef: 1 }, 'gamma-MoD'],
    [{ capacity: 0.5, skip: 'attention', aux_loss_coef: 1 }, 'attention skip (MindSkip)'],
  ] as const) {
    const m = new MoETransformerLM(cfgOf(mod, { vocab_size: 8 }), 5);
    m.train();
    const ids = Int32Array.of(1, 5, 2, 7, 3, 0);
    const router = m.depth_router_shared ?? m.layers[0].depth_router!;
    // a wide margin around the k-th logit keeps the top-k choice fixed under the finite-difference steps
    router.weight.data.forEach((_, i, a) => (a[i] *= 40));
    const targets = Int32Array.of(5, 2, 7, 3, 0, 1);
    const loss = () => lmLoss(m.forward(ids, 1, 6, ctx(true)), targets).loss;
    const inputs = [router.weight, m.layers[0].self_attn.parameters()[0], m.layers[0].mlp!.down_proj.weight, ...(m.layers[0].depth_predictor ? [m.layers[0].depth_predictor.fc1.weight] : [])];
    const rep = gradcheck(name, loss, inputs, { eps: 2e-3 });
    assert.ok(rep.checked > 0);
  }
});

test('causal inference: each token decided from itself; KV-cached decoding equals the full causal forward, token for token', () => {
  for (const mod of [
    { capacity: 0.5, causal: 'predictor' },
    { capacity: 0.5, causal: 'router', router: 'gamma' },
    { capacity: 0.5, skip: 'attention', weight: 'tanh' },
  ] as const) {
    const cfg = cfgOf(mod, { num_hidden_layers: 3, max_position_embeddings: 32 });
    const m = new MoETransformerLM(cfg, 11);
    // spread the rule's logits so some tokens run and some skip each routed layer
    for (const l of m.layers) l.depth_predictor?.fc2.weight.data.forEach((_, i, a) => (a[i] *= 30));
    m.depth_router_shared?.weight.data.forEach((_, i, a) => (a[i] *= 30));
    m.eval();
    const ids = Int32Array.from({ length: 12 }, (_, i) => (i * 5 + 1) % 16);
    noGrad(() => {
      const full = m.forward(ids, 1, 12, ctx(false));
      const kept = full.depth!.map((d) => d.rows.length);
      assert.ok(
        kept.some((k) => k > 0 && k < 12),
        `some tokens skip and some run: ${kept}`,
      );
      const cache = m.emptyCache();
      const steps = [3, 1, 1, 4, 1, 2];
      let t = 0;
      for (const n of steps) {
        const r = m.forward(ids.subarray(t, t + n), 1, n, { ...ctx(false), cache });
        assertClose(r.logits.data, full.logits.data.subarray(t * 16, (t + n) * 16), 1e-5, 1e-4, `tokens ${t}..${t + n - 1}`);
        t += n;
      }
      // a routed layer caches only the tokens it ran
      full.depth!.forEach((d) => assert.equal(cache.k[d.layer]?.shape[2] ?? 0, d.rows.length, `layer ${d.layer} cache`));
    });
  }
});

test('generation: eager path with the KV cache; the fast engine names --engine eager; top-k inference is refused as non-causal', () => {
  const tok = new ByteTokenizer();
  const m = new MoETransformerLM(cfgOf({ capacity: 0.5 }, { vocab_size: 256, num_hidden_layers: 2 }), 2);
  m.eval();
  const r = generate(m, tok, 'ab', { maxNewTokens: 6, temperature: 0 });
  assert.equal(r.engine, 'eager');
  assert.equal(r.ids.length, 6);
  // greedy tokens equal argmax of the full forward over prompt + generated
  noGrad(() => {
    const all = Int32Array.from([97, 98, ...r.ids]);
    const full = m.forward(all, 1, all.length, ctx(false)).logits.data;
    for (let i = 0; i < 6; i++) {
      const row = full.subarray((i + 1) * 256, (i + 2) * 256);
      assert.equal(r.ids[i], row.indexOf(Math.max(...row)), `token ${i}`);
    }
  });
  assert.throws(() => generate(m, tok, 'ab', { maxNewTokens: 2, engine: 'fast' }), /mixture_of_depths token routing; use --engine eager/);
  const topk = new MoETransformerLM(cfgOf({ capacity: 0.5, inference: 'topk' }, { vocab_size: 256 }), 2);
  assert.throws(() => generate(topk, tok, 'ab', { maxNewTokens: 2 }), /inference "topk" is not causal/);
  assert.equal(DecodeEngine.unsupported(topk), 'mixture_of_depths token routing; use --engine eager');
});

const TEXT = 'First Citizen:\nBefore we proceed any further, hear me speak.\n'.repeat(40);

test('a Mixture-of-Depths MoE model trains from a config (loss falls, the causal loss in the total), checkpoints and generates the same text after loading', () => {
  const cfg = parseRunConfig({
    model: { hidden_size: 16, num_hidden_layers: 2, num_attention_heads: 2, num_local_experts: 4, num_experts_per_tok: 2, moe_intermediate_size: 16, mixture_of_depths: { capacity: 0.5 } },
    training: { steps: 12, batch_size: 2, seq_len: 16, warmup_steps: 1, lr: 1e-2 },
    data: { sources: ['shakespeare'] },
  });
  const s = new TrainSession(cfg, [TEXT]);
  const first = s.trainStep();
  assert.ok(Number.isFinite(first.aux['depth.causal'] ?? NaN), `depth.causal in ${JSON.stringify(first.aux)}`);
  let last = first.loss;
  for (let i = 0; i < 11; i++) last = s.trainStep().loss;
  assert.ok(last < first.loss, `loss ${first.loss} -> ${last}`);
  const ck = checkpointFromBytes(s.checkpointBytes(), undefined, 'mod.safetensors');
  const loaded = inferenceModelFromCheckpoint(ck, 'mod.safetensors');
  const text = (mm: typeof loaded) => generate(mm.model, mm.tokenizer, 'First', { maxNewTokens: 10, temperature: 0 }).text;
  assert.equal(text(loaded), text({ ...loaded, model: s.model as MoETransformerLM }));
});
