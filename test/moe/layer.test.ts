// The MoE layer end to end: the fast path against the naive reference for every router,
// the one-expert dense special case, capacity, soft routing, heterogeneous and shared
// experts, gradients by finite differences, load tracking, losses and config errors.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Tensor, noGrad, matmul, mul, silu, reshape, add, sum, concat } from '../../src/index.js';
import { Rng } from '../../src/tensor/random.js';
import { MoELayer, validateMoEConfig, type MoELayerConfig } from '../../src/moe/layer.js';
import { referenceMoE } from '../../src/moe/reference.js';
import { routerRegistry } from '../../src/moe/routers/index.js';
import { lossRegistry } from '../../src/moe/losses/index.js';
import { FFNExperts, HeterogeneousExperts, expertRegistry } from '../../src/moe/experts/index.js';
import type { RouterContext } from '../../src/moe/types.js';
import { gradcheck, randn, assertClose } from '../helpers/gradcheck.js';

// Routers whose files may land after index.ts lists them: register what exists.
for (const f of ['top-p', 'hash', 'threshold', 'null-experts', 'remoe', 'dense-to-sparse']) {
  try {
    await import(`../../src/moe/routers/${f}.js`);
  } catch {
    // not there yet: the tests below skip it
  }
}

function ctxOf(training: boolean, T: number, seed = 1): RouterContext {
  return { training, step: 0, totalSteps: 100, rng: new Rng(seed), tokenIds: Int32Array.from({ length: T }, (_, i) => (i * 7919) % 1000) };
}

function cfgOf(over: Partial<MoELayerConfig> = {}): MoELayerConfig {
  return { dModel: 6, numExperts: 4, topK: 2, experts: { type: 'swiglu', dFF: 5 }, router: { type: 'topk' }, ...over };
}

test('one expert with k=1 (topk, renormalised) equals the dense FFN with the same weights', () => {
  const layer = new MoELayer(cfgOf({ numExperts: 1, topK: 1, router: { type: 'topk', normalize: true } }), new Rng(1));
  const x = randn(new Rng(2), [7, 6], false);
  const { y } = noGrad(() => layer.forward(x, ctxOf(false, 7)));
  const ex = layer.experts as FFNExperts;
  const w1 = reshape(ex.w1, [6, 5]);
  const w3 = reshape(ex.w3!, [6, 5]);
  const w2 = reshape(ex.w2, [5, 6]);
  const dense = noGrad(() => matmul(mul(silu(matmul(x, w1)), matmul(x, w3)), w2));
  assertClose(y.data, dense.data, 1e-6, 1e-5);
});

const ROUTERS: { type: string; opts?: Record<string, unknown> }[] = [
  { type: 'topk' },
  { type: 'topk', opts: { noisyGating: true } },
  { type: 'switch' },
  { type: 'expert-choice' },
  { type: 'top-p' },
  { type: 'hash' },
  { type: 'aux-free' },
  { type: 'soft', opts: { slotsPerExpert: 2 } },
  { type: 'threshold' },
  { type: 'null-experts' },
  { type: 'remoe' },
  { type: 'dense-to-sparse' },
];

for (const r of ROUTERS) {
  const label = `${r.type}${r.opts ? ' ' + JSON.stringify(r.opts) : ''}`;
  test(`fast path equals the naive reference: router ${label}`, (t) => {
    if (!routerRegistry.has(r.type)) return t.skip(`router "${r.type}" not registered yet`);
    for (const act of ['swiglu', 'gelu'] as const) {
      for (const training of [false, true]) {
        const layer = new MoELayer(cfgOf({ experts: { type: act, dFF: 5 }, router: { type: r.type, ...r.opts } }), new Rng(3));
        const x = randn(new Rng(4), [11, 6], false);
        const { y, aux } = noGrad(() => layer.forward(x, ctxOf(training, 11)));
        assert.deepEqual(y.shape, [11, 6]);
        assertClose(y.data, referenceMoE(layer, x, aux.router), 1e-5, 1e-4, `${label} ${act} training=${training}`);
        assert.equal(aux.metrics.droppedFraction, 0);
      }
    }
  });
}

test('capacity dispatch: equals dropless without overflow; with overflow drops and reports the fraction', () => {
  const x = randn(new Rng(5), [16, 6], false);
  const dropless = new MoELayer(cfgOf(), new Rng(6));
  const roomy = new MoELayer(cfgOf({ dispatch: { type: 'capacity', capacityFactor: 4 } }), new Rng(6));
  const a = noGrad(() => dropless.forward(x, ctxOf(false, 16)));
  const b = noGrad(() => roomy.forward(x, ctxOf(false, 16)));
  assertClose(b.y.data, a.y.data, 0, 0);
  assert.equal(b.aux.metrics.droppedFraction, 0);

  // capacityFactor 0.5: capacity = ceil(0.5 * 16 * 2 / 4) = 4 per expert, 16 of 32 at most
  const tight = new MoELayer(cfgOf({ dispatch: { type: 'capacity', capacityFactor: 0.5 } }), new Rng(6));
  const c = noGrad(() => tight.forward(x, ctxOf(false, 16)));
  const r = c.aux.router.routing;
  assert.equal(r.kind, 'sparse');
  if (r.kind !== 'sparse') return;
  // expected drops by hand: per expert, keep the 4 highest weights (ties: earlier token)
  const kept = new Uint8Array(r.expertIdx.length);
  for (let e = 0; e < 4; e++) {
    const mine = [...r.expertIdx.keys()].filter((i) => r.expertIdx[i] === e);
    mine.sort((i, j) => r.weights.data[j] - r.weights.data[i] || r.tokenIdx[i] - r.tokenIdx[j]);
    for (const i of mine.slice(0, 4)) kept[i] = 1;
  }
  const dropped = kept.reduce((s, k) => s + 1 - k, 0);
  assert.ok(dropped > 0, 'the routing should overflow at capacity factor 0.5');
  assert.ok(Math.abs(c.aux.metrics.droppedFraction - dropped / kept.length) < 1e-12);
  assertClose(c.y.data, referenceMoE(tight, x, c.aux.router, kept), 1e-5, 1e-4);
});

test('heterogeneous experts through the layer match the reference', () => {
  const layer = new MoELayer(cfgOf({ numExperts: 5, experts: { type: 'swiglu', dFF: 4, sizes: [8, 4, 8, 2, 4] } }), new Rng(7));
  assert.ok(layer.experts instanceof HeterogeneousExperts);
  const x = randn(new Rng(8), [12, 6], false);
  const { y, aux } = noGrad(() => layer.forward(x, ctxOf(false, 12)));
  assertClose(y.data, referenceMoE(layer, x, aux.router), 1e-5, 1e-4);
});

test('shared experts are added to the routed output for every token', () => {
  const layer = new MoELayer(cfgOf({ sharedExperts: { count: 2, dFF: 3 } }), new Rng(9));
  const x = randn(new Rng(10), [9, 6], false);
  const { y, aux } = noGrad(() => layer.forward(x, ctxOf(false, 9)));
  assertClose(y.data, referenceMoE(layer, x, aux.router), 1e-5, 1e-4);
  const routed = noGrad(() => layer.shared!.forward(x));
  const noShared = Object.assign(Object.create(Object.getPrototypeOf(layer)), layer, { shared: null }) as MoELayer;
  const yr = referenceMoE(noShared, x, aux.router);
  for (let i = 0; i < y.size; i++) assert.ok(Math.abs(y.data[i] - yr[i] - routed.data[i]) < 1e-4);
  assert.deepEqual(
    layer
      .namedParameters()
      .map(([n]) => n)
      .filter((n) => n.startsWith('shared.')),
    ['shared.w1', 'shared.w3', 'shared.w2'],
  );
});

test('gradients of the whole layer match finite differences (x, router weights, expert weights)', () => {
  for (const dispatch of [{ type: 'dropless' as const }, { type: 'capacity' as const, capacityFactor: 0.75 }]) {
    const layer = new MoELayer(
      { dModel: 4, numExperts: 3, topK: 2, experts: { type: 'swiglu', dFF: 3 }, router: { type: 'topk' }, dispatch, sharedExperts: { count: 1, dFF: 2 }, losses: { zloss: 0.1 } },
      new Rng(11),
    );
    // a larger router scale keeps selections away from ties so finite differences do not flip them
    const gate = layer.namedParameters().find(([n]) => n.startsWith('router.'))![1];
    for (let i = 0; i < gate.size; i++) gate.data[i] *= 20;
    const x = randn(new Rng(12), [5, 4]);
    const params = layer.parameters();
    const fn = (xx: Tensor) => {
      const { y, aux } = layer.forward(xx, ctxOf(false, 5));
      const extra = Object.values(aux.losses).reduce((s, l) => add(s, l));
      return concat([reshape(y, [y.size]), reshape(extra, [1])], 0);
    };
    gradcheck(`MoELayer ${dispatch.type}`, fn, [x, ...params], { eps: 1e-3, atol: 5e-3, rtol: 2e-2 });
  }
});

test('gradients reach the soft router and experts', () => {
  const layer = new MoELayer(cfgOf({ dModel: 3, numExperts: 2, topK: 1, experts: { type: 'gelu', dFF: 2 }, router: { type: 'soft', slotsPerExpert: 2 } }), new Rng(13));
  const x = randn(new Rng(14), [4, 3]);
  gradcheck('MoELayer soft', (xx) => layer.forward(xx, ctxOf(false, 4)).y, [x, ...layer.parameters()], { eps: 1e-3, atol: 5e-3, rtol: 2e-2 });
});

test('configured losses are the registry losses times their coefficients, plus the router losses', () => {
  const layer = new MoELayer(cfgOf({ losses: { switch: 0.01, zloss: 0.001 } }), new Rng(15));
  const x = randn(new Rng(16), [8, 6], false);
  const { aux } = noGrad(() => layer.forward(x, ctxOf(true, 8)));
  assert.deepEqual(Object.keys(aux.losses).sort(), ['switch', 'zloss']);
  const info = { numExperts: 4, tokens: 8, topK: 2 };
  assert.ok(Math.abs(aux.losses.switch.item() - 0.01 * lossRegistry.get('switch')(aux.router, info).item()) < 1e-9);
  assert.ok(Math.abs(aux.losses.zloss.item() - 0.001 * lossRegistry.get('zloss')(aux.router, info).item()) < 1e-9);
  assert.equal(
    aux.metrics.tokensPerExpert.reduce((a, b) => a + b, 0),
    16,
  );
  // backward through y and the losses reaches the router
  const layer2 = new MoELayer(cfgOf({ losses: { switch: 0.01 } }), new Rng(15));
  const out = layer2.forward(x, ctxOf(true, 8));
  add(sum(out.y), out.aux.losses.switch).backward();
  for (const [name, p] of layer2.namedParameters()) assert.ok(p.grad && p.grad.some((g) => g !== 0), `no gradient for ${name}`);
});

test('load is summed over training forwards and handed to router.afterStep, then reset', () => {
  const layer = new MoELayer(cfgOf({ router: { type: 'aux-free' } }), new Rng(17));
  const seen: Float64Array[] = [];
  const orig = layer.router.afterStep!.bind(layer.router);
  layer.router.afterStep = (load: Float64Array) => {
    seen.push(load.slice());
    orig(load);
  };
  const x = randn(new Rng(18), [10, 6], false);
  noGrad(() => layer.forward(x, ctxOf(true, 10)));
  noGrad(() => layer.forward(x, ctxOf(true, 10)));
  noGrad(() => layer.forward(x, ctxOf(false, 10))); // eval: not counted
  const load = layer.currentLoad();
  assert.equal(
    load.reduce((a, b) => a + b, 0),
    2 * 10 * 2,
  );
  layer.afterStep();
  assert.deepEqual(Array.from(seen[0]), Array.from(load));
  assert.deepEqual(Array.from(layer.currentLoad()), [0, 0, 0, 0]);
  // a router without afterStep is fine
  const plain = new MoELayer(cfgOf(), new Rng(1));
  noGrad(() => plain.forward(x, ctxOf(true, 10)));
  plain.afterStep();
});

test('bad configs fail with errors naming the field', () => {
  const bad: [unknown, RegExp][] = [
    [null, /config must be an object/],
    [{ ...cfgOf(), dModel: 0 }, /config\.dModel must be a positive integer, got 0/],
    [{ ...cfgOf(), numExperts: 2.5 }, /config\.numExperts must be a positive integer, got 2\.5/],
    [{ ...cfgOf(), topK: 5 }, /config\.topK must be at most numExperts \(4\), got 5/],
    [{ ...cfgOf(), experts: { type: 'relu', dFF: 4 } }, new RegExp(`config\\.experts\\.type must be one of ${expertRegistry.names().join(', ')}, got "relu"`)],
    [{ ...cfgOf(), experts: { type: 'gelu' } }, /config\.experts\.dFF must be a positive integer, got undefined/],
    [{ ...cfgOf(), experts: { type: 'gelu', dFF: 4, sizes: [4, 4] } }, /config\.experts\.sizes must be an array of 4 expert widths/],
    [{ ...cfgOf(), experts: { type: 'gelu', dFF: 4, sizes: [4, 4, 0, 4] } }, /config\.experts\.sizes\[2\] must be a positive integer, got 0/],
    [{ ...cfgOf(), experts: { type: 'gelu', dFF: 4, width: 3 } }, /unknown field config\.experts\.width/],
    [{ ...cfgOf(), router: { type: 'nope' } }, /config\.router\.type must be one of .*topk/],
    [{ ...cfgOf(), router: 'topk' }, /config\.router must be an object/],
    [{ ...cfgOf(), router: { type: 'topk', topK: 3 } }, /config\.router\.topK is taken from config\.topK/],
    [{ ...cfgOf(), router: { type: 'topk', bogus: 1 } }, /router "topk": unknown option "bogus"/],
    [{ ...cfgOf(), dispatch: { type: 'capacity' } }, /config\.dispatch\.capacityFactor must be a positive finite number, got undefined/],
    [{ ...cfgOf(), dispatch: { type: 'capacity', capacityFactor: -1 } }, /config\.dispatch\.capacityFactor must be a positive finite number, got -1/],
    [{ ...cfgOf(), dispatch: { type: 'padded' } }, /config\.dispatch\.type must be 'dropless' or 'capacity', got "padded"/],
    [{ ...cfgOf(), sharedExperts: { count: 0, dFF: 4 } }, /config\.sharedExperts\.count must be a positive integer, got 0/],
    [{ ...cfgOf(), losses: { balance: 0.01 } }, /config\.losses\.balance: unknown loss "balance": expected one of .*switch/],
    [{ ...cfgOf(), losses: { switch: -1 } }, /config\.losses\.switch must be a finite non-negative coefficient, got -1/],
    [{ ...cfgOf(), capacity: 2 }, /unknown field config\.capacity/],
  ];
  for (const [cfg, re] of bad) assert.throws(() => new MoELayer(cfg as MoELayerConfig, new Rng(0)), re, JSON.stringify(cfg));
  assert.equal(validateMoEConfig(cfgOf()).dispatch.type, 'dropless');
  const layer = new MoELayer(cfgOf(), new Rng(0));
  assert.throws(() => layer.forward(randn(new Rng(0), [3, 5], false), ctxOf(false, 3)), /MoELayer\.forward: x must be \[T, 6\] \(tokens x dModel\), got \[3, 5\]/);
});

test('same seed, same layer; parameters are discoverable by name', () => {
  const a = new MoELayer(cfgOf(), new Rng(21));
  const b = new MoELayer(cfgOf(), new Rng(21));
  const na = a.namedParameters();
  assert.deepEqual(
    na.map(([n]) => n),
    ['router.gate.weight', 'experts.w1', 'experts.w3', 'experts.w2'],
  );
  na.forEach(([n, p], i) => assert.deepEqual(p.data, b.namedParameters()[i][1].data, n));
});

test('switch routing defaults to capacity dispatch with its capacity factor; an explicit dispatch overrides it', () => {
  const rng = new Rng(11);
  const T = 32;
  // identical rows route every token to the same expert, so capacity must drop most of them
  const row = rng.fillNormal(new Float32Array(8));
  const x = new Tensor(
    new Float32Array(T * 8).map((_, i) => row[i % 8]),
    [T, 8],
  );
  const cfg = { dModel: 8, numExperts: 4, topK: 1, experts: { type: 'swiglu' as const, dFF: 8 }, router: { type: 'switch', capacityFactor: 1 } };
  const ctx = { training: false, step: 0, rng: new Rng(1) };
  const capped = new MoELayer(cfg, new Rng(3)).forward(x, ctx);
  assert.equal(capped.aux.metrics.droppedFraction, 1 - 8 / 32, 'capacity = ceil(1 * 32 / 4) = 8 of 32 kept');
  const dropless = new MoELayer({ ...cfg, dispatch: { type: 'dropless' } }, new Rng(3)).forward(x, ctx);
  assert.equal(dropless.aux.metrics.droppedFraction, 0);
});
