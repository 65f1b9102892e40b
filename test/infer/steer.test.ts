// Expert steering at inference: the MoE layer's routing override (force / forbid experts, Mixture
// of Tunable Experts 2025), for any router with ranking logits, through the eager and the fast
// decode path; and self-contrast decoding (SCMoE 2024) against its formula recomputed by full
// forwards without a cache.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { noGrad } from '../../src/index.js';
import { Rng } from '../../src/tensor/random.js';
import { MoETransformerLM } from '../../src/models/transformer.js';
import { parseModelConfig } from '../../src/models/config.js';
import { ByteTokenizer } from '../../src/data/tokenizer/index.js';
import { generate, argmax, contrastLogits, withExpertOverrides, defaultWeakRank } from '../../src/infer/index.js';
import { MoELayer, ExpertOverride, parseExpertSpecs, type SparseRouting } from '../../src/moe/index.js';

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

function layer(router: Record<string, unknown>, topK = 2, E = 4): MoELayer {
  return new MoELayer({ dModel: 8, numExperts: E, topK, experts: { type: 'swiglu', dFF: 8 }, router: router as { type: string } }, new Rng(5));
}
const rows = (T: number, d = 8, seed = 1) => new Rng(seed).fillNormal(new Float32Array(T * d), 1);
const perToken = (r: SparseRouting, T: number) => {
  const out: { e: number[]; w: number[] }[] = Array.from({ length: T }, () => ({ e: [], w: [] }));
  for (let a = 0; a < r.tokenIdx.length; a++) {
    out[r.tokenIdx[a]].e.push(r.expertIdx[a]);
    out[r.tokenIdx[a]].w.push(r.weights.data[a]);
  }
  return out;
};

test('forbid: masked before top-k, the next best by logit fills in, weights the renormalised top-k of the rest (Mixtral-style router)', async () => {
  const { tensor } = await import('../../src/index.js');
  const m = layer({ type: 'topk', normalize: true });
  const T = 24;
  const x = tensor(rows(T), [T, 8]);
  const base = noGrad(() => m.route(x, ctx()));
  m.routingOverride = new ExpertOverride({ forbid: [1] });
  const out = noGrad(() => m.route(x, ctx()));
  const got = perToken(out.routing as SparseRouting, T);
  const before = perToken(base.routing as SparseRouting, T);
  let changed = 0;
  for (let t = 0; t < T; t++) {
    const p = Array.from(base.probs.data.subarray(t * 4, t * 4 + 4));
    // the reference: softmax top-2 among experts 0, 2, 3, renormalised
    const ref = [0, 2, 3].sort((a, b) => p[b] - p[a] || a - b).slice(0, 2);
    assert.deepEqual([...got[t].e].sort(), [...ref].sort(), `token ${t}`);
    const s = ref.reduce((a, e) => a + p[e], 0);
    for (const [j, e] of got[t].e.entries()) assert.ok(Math.abs(got[t].w[j] - p[e] / s) < 1e-6);
    if (before[t].e.includes(1)) changed++;
    else assert.deepEqual(got[t], before[t], 'a token that did not use expert 1 keeps its routing bit for bit');
  }
  assert.ok(changed > 0, 'some token used expert 1 before');
  // the layer output follows: y with the override = y of the overridden routing
  const y = noGrad(() => m.forward(x, ctx()));
  assert.ok(!Array.from((y.aux.router.routing as SparseRouting).expertIdx).includes(1));
});

test('force: the forced expert is in every token set, the lowest-logit unforced choice makes room; empty override is bit-identical', async () => {
  const { tensor } = await import('../../src/index.js');
  for (const router of [{ type: 'topk', normalize: true }, { type: 'switch' }, { type: 'expert-choice' }]) {
    const k = router.type === 'switch' ? 1 : 2;
    const m = layer(router, k);
    const T = 16;
    const x = tensor(rows(T, 8, 2), [T, 8]);
    const base = noGrad(() => m.forward(x, ctx()));
    m.routingOverride = new ExpertOverride({});
    const same = noGrad(() => m.forward(x, ctx()));
    assert.deepEqual(same.y.data, base.y.data, `${router.type}: no-op override changes nothing`);
    m.routingOverride = new ExpertOverride({ force: [3] });
    const f = noGrad(() => m.forward(x, ctx()));
    const got = perToken(f.aux.router.routing as SparseRouting, T);
    const before = perToken(base.aux.router.routing as SparseRouting, T);
    const L = base.aux.router.logits.data;
    for (let t = 0; t < T; t++) {
      assert.ok(got[t].e.includes(3), `${router.type} token ${t}: forced expert present`);
      assert.equal(got[t].e.length, Math.max(1, before[t].e.length), `${router.type}: the token keeps its expert count`);
      if (!before[t].e.includes(3) && before[t].e.length > 1) {
        const dropped = before[t].e.filter((e) => !got[t].e.includes(e));
        assert.equal(dropped.length, 1);
        for (const e of before[t].e) if (e !== dropped[0]) assert.ok(L[t * 4 + dropped[0]] <= L[t * 4 + e], 'the lowest-logit choice was dropped');
      }
    }
    m.routingOverride = null;
  }
});

test('overrides refuse routers without ranking logits and soft routing, and bad experts, in one line', async () => {
  const { tensor } = await import('../../src/index.js');
  const x = tensor(rows(4), [4, 8]);
  const h = layer({ type: 'hash' });
  h.routingOverride = new ExpertOverride({ forbid: [0] });
  assert.throws(
    () => noGrad(() => h.forward(x, { ...ctx(), tokenIds: Int32Array.from([1, 2, 3, 4]) })),
    /^Error: ExpertOverride: router "hash" has no logits that rank experts \(experts are a fixed hash of the token id\)$/,
  );
  const s = layer({ type: 'soft' });
  s.routingOverride = new ExpertOverride({ forbid: [0] });
  assert.throws(() => noGrad(() => s.forward(x, ctx())), /router "soft" routes softly/);
  const t = layer({ type: 'topk' });
  t.routingOverride = new ExpertOverride({ forbid: [7] });
  assert.throws(() => noGrad(() => t.forward(x, ctx())), /expert 7 outside the layer's 4 experts/);
  t.routingOverride = new ExpertOverride({ forbid: [0, 1, 2, 3] });
  assert.throws(() => noGrad(() => t.forward(x, ctx())), /all 4 experts are forbidden/);
  assert.throws(() => new ExpertOverride({ force: [1], forbid: [1] }), /expert 1 is both forced and forbidden/);
  assert.deepEqual(parseExpertSpecs(['1:3', '0:2,1'], ['1:0']), [
    { layer: 0, force: [2, 1] },
    { layer: 1, force: [3], forbid: [0] },
  ]);
  assert.throws(() => parseExpertSpecs(['1-3']), /^Error: --force-expert must be LAYER:EXPERT \(e\.g\. 0:3, or 0:3,5\), got "1-3"$/);
  const model = new MoETransformerLM(parseModelConfig(CFG), 3).eval();
  assert.throws(() => generate(model, new ByteTokenizer(), 'a', { maxNewTokens: 1, experts: [{ layer: 5, forbid: [0] }] }), /generate: experts: layer 5 must be a layer index in \[0, 2\)/);
  assert.throws(() => generate(model, new ByteTokenizer(), 'a', { maxNewTokens: 1, experts: [{ layer: 0, forbid: [4] }] }), /layer 0 expert 4 must be in \[0, 4\)/);
});

test('generate: a forbidden expert never appears in the trace, a forced one always; earlier layers untouched; fast path = eager', () => {
  const model = new MoETransformerLM(parseModelConfig(CFG), 3).eval();
  const tok = new ByteTokenizer();
  const opts = { maxNewTokens: 10, temperature: 0, seed: 1, traceRouting: true };
  const base = generate(model, tok, 'the cat', opts);
  const none = generate(model, tok, 'the cat', { ...opts, experts: [] });
  assert.deepEqual(none.ids, base.ids, 'no override: the same tokens');
  assert.deepEqual(none.routing, base.routing, 'no override: the same routing');
  const used = base.routing!.flatMap((t) => t.layers.find((l) => l.layer === 1)!.experts);
  const busiest = [0, 1, 2, 3].sort((a, b) => used.filter((e) => e === b).length - used.filter((e) => e === a).length)[0];
  const forb = generate(model, tok, 'the cat', { ...opts, experts: [{ layer: 1, forbid: [busiest] }] });
  for (const t of forb.routing!) {
    assert.ok(!t.layers.find((l) => l.layer === 1)!.experts.includes(busiest), 'forbidden expert absent');
    assert.equal(t.layers.find((l) => l.layer === 1)!.experts.length, 2);
  }
  // layer 0 runs before the override: its routing on the prompt is unchanged
  const prompt = (r: typeof base) => r.routing!.filter((t) => t.prompt).map((t) => t.layers[0]);
  assert.deepEqual(prompt(forb), prompt(base));
  const unused = [0, 1, 2, 3].find((e) => base.routing!.some((t) => !t.layers[0].experts.includes(e)))!;
  const forced = generate(model, tok, 'the cat', { ...opts, experts: [{ layer: 0, force: [unused] }] });
  for (const t of forced.routing!) if (t.layers.length) assert.ok(t.layers[0].experts.includes(unused), 'forced expert present');
  assert.notDeepEqual(forced.routing, base.routing, 'forcing changes the trace');
  // the fast decode path honours the same override
  const steer = {
    maxNewTokens: 10,
    temperature: 0,
    experts: [
      { layer: 1, forbid: [busiest] },
      { layer: 0, force: [unused] },
    ],
  };
  const fast = generate(model, tok, 'the cat', { ...steer, engine: 'fast' });
  const eager = generate(model, tok, 'the cat', { ...steer, engine: 'eager' });
  assert.equal(fast.engine, 'fast f32');
  assert.deepEqual(fast.ids, eager.ids);
  // restored afterwards
  for (const m of model.moeLayers()) assert.equal(m.routingOverride, null);
});

test('contrastLogits: (1+β)·strong − β·weak on the plausible tokens; β = 0 and α = 0 return the strong logits', () => {
  const s = [2, 1, 0, -3];
  const w = [1, 2, 0, 0];
  assert.deepEqual(Array.from(contrastLogits(s, w, 0.5, 0)), [2.5, 0.5, 0, -4.5]);
  // α = 0.1: p(x) >= 0.1 · max p  <=>  s(x) >= 2 + ln 0.1 = -0.303
  assert.deepEqual(Array.from(contrastLogits(s, w, 0.5, 0.1)), [2.5, 0.5, 0, -Infinity]);
  assert.deepEqual(Array.from(contrastLogits(s, w, 0, 0)), s);
  assert.throws(() => contrastLogits(s, w, -1), /beta must be a finite number >= 0/);
  assert.throws(() => contrastLogits(s, [1], 1), /4 strong logits but 1 weak/);
});

test('generate --contrast: β = 0 is plain decoding; β > 0 matches the formula recomputed by full forwards of strong and rank-k weak routing', () => {
  const model = new MoETransformerLM(parseModelConfig(CFG), 7).eval();
  const tok = new ByteTokenizer();
  const sample = { maxNewTokens: 12, temperature: 0.9, seed: 3 };
  assert.deepEqual(generate(model, tok, 'ab', { ...sample, contrast: { beta: 0, alpha: 0 } }).ids, generate(model, tok, 'ab', sample).ids, 'β = 0, α = 0: the same samples');
  const greedy = { maxNewTokens: 8, temperature: 0 };
  assert.deepEqual(generate(model, tok, 'ab', { ...greedy, contrast: { beta: 0 } }).ids, generate(model, tok, 'ab', greedy).ids, 'β = 0: greedy unchanged');
  const beta = 5;
  const alpha = 0.01;
  const r = generate(model, tok, 'ab', { ...greedy, contrast: { beta, alpha } });
  const plain = generate(model, tok, 'ab', greedy);
  assert.notDeepEqual(r.ids, plain.ids, 'a strong contrast changes the greedy text');
  assert.equal(defaultWeakRank(model), 2);
  const last = (ids: Int32Array) => noGrad(() => model.forward(ids, 1, ids.length, { ctx: ctx() }).logits.data.slice((ids.length - 1) * 256, ids.length * 256));
  const seq = [97, 98];
  for (const next of r.ids) {
    const ids = Int32Array.from(seq);
    const strong = last(ids);
    const weak = withExpertOverrides(model, [], () => last(ids), 2);
    assert.equal(next, argmax(contrastLogits(strong, weak, beta, alpha)));
    seq.push(next);
  }
  // the fast path's second engine gives the same tokens
  assert.deepEqual(generate(model, tok, 'ab', { ...greedy, contrast: { beta, alpha }, engine: 'fast' }).ids, r.ids);
  assert.throws(() => generate(model, tok, 'ab', { ...greedy, contrast: { beta: -1 } }), /contrast\.beta must be a finite number >= 0/);
});
