import { test } from 'node:test';
import assert from 'node:assert/strict';
import '../../src/kernels/index.js';
import { parseModelConfig } from '../../src/models/config.js';
import { DESIGNS, REFERENCE, FLOP_TOLERANCE, baseConfig, matchDesign, measureFlopsPerToken, runDesigns, selectDesigns, summarize, report, type ArchDesign } from '../../bench/suites/architectures.js';

const fieldValue = (model: unknown, field: string): unknown => field.split('.').reduce<unknown>((v, k) => (v as Record<string, unknown>)?.[k], model);

test('measured FLOPs/token of a dense model equal the analytic count of its matmuls', () => {
  const [d, f, L, V, T] = [16, 24, 2, 32, 8];
  const cfg = parseModelConfig({ hidden_size: d, intermediate_size: f, num_hidden_layers: L, num_attention_heads: 2, num_local_experts: 0, vocab_size: V, max_position_embeddings: 16 });
  // per layer: q, k, v, o projections; scores and values over all T keys (the kernel computes the full square); SwiGLU; then the tied LM head
  const expected = 2 * (L * (4 * d * d + 2 * T * d + 3 * d * f) + d * V);
  assert.equal(measureFlopsPerToken(cfg, 3, T), expected);
  // an MoE counts only the experts a token reaches: k of E experts, plus the router
  const moe = parseModelConfig({ ...cfg, num_local_experts: 4, num_experts_per_tok: 2, moe_intermediate_size: f / 2 });
  const moeExpected = 2 * (L * (4 * d * d + 2 * T * d + 2 * 3 * d * (f / 2) + d * 4) + d * V);
  assert.equal(measureFlopsPerToken(moe, 3, T), moeExpected);
});

test('PEER FLOPs/token: query projection, sub-key scores, k^2 candidate sums and k single-neuron experts per head, by hand', () => {
  const [d, L, V, T, H, n, k, dk] = [16, 1, 32, 8, 2, 4, 2, 8];
  const cfg = parseModelConfig({
    hidden_size: d,
    num_hidden_layers: L,
    num_attention_heads: 2,
    vocab_size: V,
    max_position_embeddings: 16,
    ffn_type: 'peer',
    ffn_options: { numExperts: n * n, heads: H, topK: k, keyDim: dk },
  });
  // multiply-adds per token: attention as above; the query [d -> H dk]; each half's dk/2-wide scores against its n sub-keys, per head;
  // each of the H k retrieved experts' down (u . x) and up (gate * act * v) products of d; then the LM head
  const macs = L * (4 * d * d + 2 * T * d + d * H * dk + H * 2 * n * (dk / 2) + H * k * 2 * d) + d * V;
  // plus one addition per candidate pair (k x k per head) of the product-key top-k
  assert.equal(measureFlopsPerToken(cfg, 3, T), 2 * macs + L * H * k * k);
  // twice the heads: every per-head term doubles, the rest stays
  const two = parseModelConfig({ ...cfg, ffn_options: { ...cfg.ffn_options, heads: 2 * H } });
  assert.equal(measureFlopsPerToken(two, 3, T) - measureFlopsPerToken(cfg, 3, T), 2 * L * H * (d * dk + n * dk + 2 * k * d) + L * H * k * k);
});

test('every design builds and is matched to the standard MoE within the FLOP tolerance (quick sizes)', () => {
  const c = baseConfig(true, 1);
  const T = c.training.seq_len;
  const ref = matchDesign(
    c.model,
    DESIGNS.find((d) => d.name === REFERENCE)!,
    0,
    2,
    T,
  ).flops;
  assert.ok(DESIGNS.length >= 9);
  for (const d of DESIGNS) {
    const m = matchDesign(c.model, d, ref, 2, T);
    assert.ok(Math.abs(m.flops / ref - 1) <= FLOP_TOLERANCE, `${d.name}: ${m.flops} FLOPs/token vs ${ref}`);
    if (d.match) {
      const w = fieldValue(m.model, d.match.field);
      assert.equal(typeof w, 'number', `${d.name}: ${d.match.field} is set`);
      assert.equal((w as number) % d.match.multiple, 0, `${d.name}: width on its multiple`);
    }
    if (d.name !== 'dense' && d.name !== REFERENCE) assert.ok(d.paper, `${d.name} cites its paper`);
  }
  assert.throws(() => selectDesigns('moe,nope'), /unknown design nope/);
  assert.deepEqual(
    selectDesigns('dense').map((d) => d.name),
    ['dense', REFERENCE],
    'the reference always runs',
  );
});

test('runDesigns --quick: one row per design and seed with loss, speed and FLOPs; a design that cannot build is an error row', async () => {
  const broken: ArchDesign = { name: 'broken', model: { attention_type: 'no-such-attention' } };
  const designs = [DESIGNS.find((d) => d.name === REFERENCE)!, DESIGNS.find((d) => d.name === 'mh-moe')!, broken];
  const rows = await runDesigns(designs, { quick: true, threads: [1], backends: ['js'], peers: false, isolate: false, seed: 7, log: () => {}, steps: 3, seeds: 2 });
  const runs = rows.filter((r) => r.kind === 'run');
  assert.equal(runs.length, 4);
  for (const r of runs) {
    assert.ok(Number.isFinite(r.valLoss) && (r.valLoss as number) > 0);
    assert.ok((r.tokensPerS as number) > 0 && (r.flopsPerToken as number) > 0);
  }
  const err = rows.filter((r) => r.kind === 'error');
  assert.equal(err.length, 1);
  assert.match(String(err[0].status), /error: .*attention_type/);
  const tables = report(rows);
  assert.equal(tables.length, 2);
  assert.deepEqual(
    tables[0].rows.map((r) => r.design),
    [REFERENCE, 'mh-moe'],
  );
});

test('summarize: Welch difference to the standard MoE, speed ratio, in design order', () => {
  const row = (design: string, seed: number, valLoss: number, tokensPerS: number) => ({
    kind: 'run',
    design,
    seed,
    valLoss,
    tokensPerS,
    params: 10,
    activeParams: 5,
    flopsPerToken: 100,
    flopsRatio: 1,
  });
  const rows = [row('moe', 1, 2.0, 1000), row('moe', 2, 2.1, 1000), row('dense', 1, 2.2, 2000), row('dense', 2, 2.3, 2000)];
  const s = summarize(rows);
  assert.deepEqual(
    s.map((x) => x.design),
    ['dense', 'moe'],
  );
  const dense = s[0];
  assert.ok(Math.abs(dense.diff!.mean - 0.2) < 1e-12);
  assert.ok(Math.abs(dense.diff!.se - Math.sqrt(0.005 / 2 + 0.005 / 2)) < 1e-12);
  assert.equal(dense.speedRatio, 2);
  assert.equal(s[1].diff, null, 'no difference of the reference to itself');
});

test('cartesian-moe is a design: FLOP-matched to the standard MoE and trained into its own row', async () => {
  const d = DESIGNS.find((x) => x.name === 'cartesian-moe');
  assert.ok(d, 'cartesian-moe is in DESIGNS');
  assert.match(d.paper ?? '', /CartesianMoE.*2024/);
  const c = baseConfig(true, 1);
  const T = c.training.seq_len;
  const ref = matchDesign(
    c.model,
    DESIGNS.find((x) => x.name === REFERENCE)!,
    0,
    2,
    T,
  ).flops;
  const m = matchDesign(c.model, d, ref, 2, T);
  assert.equal(m.model.ffn_type, 'cartesian-moe');
  assert.ok(Math.abs(m.flops / ref - 1) <= FLOP_TOLERANCE, `${m.flops} vs ${ref}`);
  // the match moves with its width: doubling moe_intermediate_size (and so the sub-experts) raises the FLOPs
  const wide = matchDesign({ ...c.model, moe_intermediate_size: 2 * c.model.moe_intermediate_size }, { ...d, match: undefined }, 0, 2, T);
  assert.ok(wide.flops > m.flops * 1.2);
  const rows = await runDesigns([DESIGNS.find((x) => x.name === REFERENCE)!, d], {
    quick: true,
    threads: [1],
    backends: ['js'],
    peers: false,
    isolate: false,
    seed: 3,
    log: () => {},
    steps: 2,
    seeds: 2,
  });
  const s = summarize(rows).find((x) => x.design === 'cartesian-moe');
  assert.ok(s, 'its row is in the summary');
  assert.equal(s.n, 2);
  assert.ok(Math.abs(s.flopsRatio - 1) <= FLOP_TOLERANCE);
  assert.ok(s.diff && Number.isFinite(s.diff.mean), 'compared with the standard MoE');
});
