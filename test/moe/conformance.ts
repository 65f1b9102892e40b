/**
 * Conformance suites generated from the registries: every registered router, expert type and
 * dispatch goes through the same contract, on every backend that loads (js always; wasm; native
 * when onnxruntime loads). A new entry adds only its own property tests; this file never names one.
 *
 * Routers: the layer's fast path equals the float64 reference (src/moe/reference.ts) for every
 * expert type, in eval and training mode; whole-layer gradients match finite differences; the
 * same seed gives the same layer and outputs; a bad or unknown option fails naming the router and
 * the option; metrics are sane and agree with the declared traits (experts per token, token ids,
 * batch independence).
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Tensor, noGrad, add, concat, reshape } from '../../src/tensor/index.js';
import { Rng } from '../../src/tensor/random.js';
import { getBackend, setBackend, createBackend, JsBackend, type BackendName } from '../../src/kernels/index.js';
import type { Backend } from '../../src/tensor/backend.js';
import { describeShape, z } from '../../src/tensor/validate.js';
import { MoELayer, type MoELayerConfig } from '../../src/moe/layer.js';
import { referenceMoE, referenceSparse, referenceSoft } from '../../src/moe/reference.js';
import { routerRegistry, type RouterSpec } from '../../src/moe/routers/index.js';
import { expertRegistry, type ExpertSpec } from '../../src/moe/experts/index.js';
import { dispatchRegistry, dispatchSchema, type DispatchSpec } from '../../src/moe/dispatch/index.js';
import type { ExpertBank, RouterContext, SparseRouting } from '../../src/moe/types.js';
import { gradcheck, randn, assertClose } from '../helpers/gradcheck.js';

const D = 6;
const E = 4;
const K = 2;
const T = 9;

export function ctxOf(training: boolean, tokens: number, seed = 1, withIds = true): RouterContext {
  return { training, step: 3, totalSteps: 10, rng: new Rng(seed), ...(withIds ? { tokenIds: Int32Array.from({ length: tokens }, (_, i) => (i * 7919 + 13) % 1000) } : {}) };
}

/** The backends that load here, each as a factory (the js one always). */
export async function availableBackends(): Promise<{ name: BackendName; make: () => Promise<Backend> }[]> {
  const out: { name: BackendName; make: () => Promise<Backend> }[] = [{ name: 'js', make: async () => new JsBackend() }];
  for (const name of ['wasm', 'native'] as const) {
    try {
      (await createBackend(name, { threads: 1 })).dispose();
      out.push({ name, make: () => createBackend(name, { threads: 1 }) });
    } catch {
      // not available on this machine: its suite is not generated
    }
  }
  return out;
}

/** Run `body` (which declares tests) with a backend active for its tests. */
function onBackend(b: { name: BackendName; make: () => Promise<Backend> }, body: () => void): void {
  describe(`backend ${b.name}`, () => {
    let prev: Backend;
    let be: Backend;
    before(async () => {
      prev = getBackend();
      be = await b.make();
      setBackend(be);
    });
    after(() => {
      setBackend(prev);
      if (be !== prev) be.dispose();
    });
    body();
  });
}

function layerConfig(spec: RouterSpec, experts: string, over: Partial<MoELayerConfig> = {}): MoELayerConfig {
  // dropless for sparse routers so the reference needs no capacity mask (dispatch has its own suite)
  const dispatch = spec.traits.routing === 'sparse' ? { dispatch: { type: dispatchRegistry.specs().find((d) => d.routing === 'sparse' && d.isDefault)!.name } } : {};
  return { dModel: D, numExperts: E, topK: K, experts: { type: experts, dFF: 5 }, router: { type: spec.name }, ...dispatch, ...over };
}

/** assert.throws matching the message itself (anchored patterns), not `Error: message`. */
function throwsMessage(fn: () => unknown, re: RegExp, what?: string): void {
  assert.throws(fn, (e: Error) => {
    assert.match(e.message, re, what);
    return true;
  });
}

/** A value no option schema of a number/boolean/enum kind accepts. */
const BAD_VALUE = 'not-a-valid-option-value';

function optionTypeOf(schema: z.ZodType): string {
  let s = schema as unknown as { _zod: { def: { type: string; innerType?: unknown } } };
  while ((s._zod.def.type === 'default' || s._zod.def.type === 'optional') && s._zod.def.innerType) s = s._zod.def.innerType as typeof s;
  return s._zod.def.type;
}

export function routerConformance(names: string[], backends: { name: BackendName; make: () => Promise<Backend> }[]): void {
  for (const b of backends) {
    onBackend(b, () => {
      for (const name of names) {
        const spec = routerRegistry.spec(name);
        describe(`router ${name}`, () => {
          test('fast path equals the float64 reference for every expert type, eval and training', () => {
            for (const experts of expertRegistry.names()) {
              for (const training of [false, true]) {
                const layer = new MoELayer(layerConfig(spec, experts), new Rng(3));
                const x = randn(new Rng(4), [T, D], false);
                const { y, aux } = noGrad(() => layer.forward(x, ctxOf(training, T)));
                assert.deepEqual(y.shape, [T, D]);
                assertClose(y.data, referenceMoE(layer, x, aux.router), 1e-5, 1e-4, `${name} ${experts} training=${training}`);
              }
            }
          });

          test('whole-layer gradients match finite differences (x, router and expert weights)', () => {
            const layer = new MoELayer(layerConfig(spec, expertRegistry.names()[0], { dModel: 4, numExperts: 3, topK: 1, experts: { type: expertRegistry.names()[0], dFF: 3 } }), new Rng(11));
            // a sharper router keeps discrete selections away from ties, so finite differences do not flip them
            for (const [n, p] of layer.namedParameters()) if (n.startsWith('router.')) for (let i = 0; i < p.size; i++) p.data[i] *= 10;
            const x = randn(new Rng(12), [5, 4]);
            const fn = (xx: Tensor) => {
              const { y, aux } = layer.forward(xx, ctxOf(false, 5, 7));
              const parts = [reshape(y, [y.size])];
              const losses = Object.values(aux.losses);
              if (losses.length)
                parts.push(
                  reshape(
                    losses.reduce((s, l) => add(s, l)),
                    [1],
                  ),
                );
              return parts.length === 1 ? parts[0] : concat(parts, 0);
            };
            const rep = gradcheck(`router ${name} layer`, fn, [x, ...layer.parameters()], { eps: 1e-3, atol: 5e-3, rtol: 2e-2 });
            assert.ok(rep.checked > x.size);
          });

          test('deterministic under a seed: same layer, same outputs; another seed differs', () => {
            const run = (seed: number) => {
              const layer = new MoELayer(layerConfig(spec, expertRegistry.names()[0]), new Rng(seed));
              const x = randn(new Rng(5), [T, D], false);
              const out = noGrad(() => layer.forward(x, ctxOf(true, T, 9)));
              return { params: layer.namedParameters().map(([n, p]) => [n, Array.from(p.data)]), y: Array.from(out.y.data) };
            };
            const a = run(21);
            assert.deepEqual(run(21), a);
            assert.notDeepEqual(run(22).params, a.params);
          });

          test('a bad or unknown option fails naming the router, the option and the value', () => {
            const make = (extra: Record<string, unknown>) => routerRegistry.get(name)({ type: name, dModel: D, numExperts: E, topK: K, ...extra }, new Rng(0));
            throwsMessage(() => make({ noSuchOption: 1 }), new RegExp(`^router "${name}": unknown option "noSuchOption"`));
            for (const [opt, schema] of Object.entries(spec.options)) {
              if (optionTypeOf(schema) === 'string' || optionTypeOf(schema) === 'unknown') continue; // any string is a value
              throwsMessage(() => make({ [opt]: BAD_VALUE }), new RegExp(`^router "${name}": option ${opt} must .*, got "${BAD_VALUE}"`), `${name}.${opt}`);
            }
            for (const d of describeShape(spec.options)) assert.ok(d.description.length > 0, `${name}.${d.name} is documented`);
          });

          test('metrics are sane and agree with the declared traits', () => {
            const layer = new MoELayer(layerConfig(spec, expertRegistry.names()[0]), new Rng(6));
            const x = randn(new Rng(7), [T, D], false);
            const { aux } = noGrad(() => layer.forward(x, ctxOf(false, T)));
            const m = aux.metrics;
            assert.equal(m.tokensPerExpert.length, E);
            for (const v of m.tokensPerExpert) assert.ok(Number.isFinite(v) && v >= 0);
            for (const v of [m.loadCV, m.maxOverMean, m.routerEntropy]) assert.ok(Number.isFinite(v) && v >= 0);
            assert.ok(m.routerEntropy <= Math.log(E) + 1e-6);
            assert.equal(m.droppedFraction, 0);
            const p = aux.router.probs.data;
            for (let t = 0; t < T; t++) {
              let s = 0;
              for (let e = 0; e < E; e++) {
                assert.ok(p[t * E + e] >= 0 && p[t * E + e] <= 1 + 1e-6, `${name} probs in [0, 1]`);
                s += p[t * E + e];
              }
              assert.ok(s <= 1 + 1e-5, `${name}: probs of token ${t} sum to ${s} > 1`);
            }
            const ept = spec.traits.expertsPerToken;
            if (ept === 'k') assert.equal(m.expertsPerToken, K);
            else if (ept === 'one') assert.equal(m.expertsPerToken, 1);
            else if (ept === 'variable') assert.ok(m.expertsPerToken >= 0 && m.expertsPerToken <= E);
            assert.equal(aux.router.routing.kind, spec.traits.routing);
            if (aux.router.routing.kind === 'sparse') {
              const total = m.tokensPerExpert.reduce((a, b) => a + b, 0);
              assert.ok(Math.abs(total - m.expertsPerToken * T) < 1e-9, 'assignments add up');
            }
          });

          test('token ids: needed exactly when the traits say so', () => {
            const layer = new MoELayer(layerConfig(spec, expertRegistry.names()[0]), new Rng(6));
            const x = randn(new Rng(7), [T, D], false);
            if (spec.traits.needsTokenIds) assert.throws(() => noGrad(() => layer.forward(x, ctxOf(false, T, 1, false))), /tokenIds/);
            else noGrad(() => layer.forward(x, ctxOf(false, T, 1, false)));
          });

          if (!spec.traits.batchDependent) {
            test('batch-independent (as declared): each token is routed the same alone as in the batch', () => {
              const layer = new MoELayer(layerConfig(spec, expertRegistry.names()[0]), new Rng(6));
              const x = randn(new Rng(7), [T, D], false);
              const ctx = ctxOf(false, T);
              const whole = noGrad(() => layer.router.route(x, ctx)).routing as SparseRouting;
              for (let t = 0; t < T; t++) {
                const xt = new Tensor(x.data.slice(t * D, (t + 1) * D), [1, D]);
                const alone = noGrad(() => layer.router.route(xt, { ...ctx, tokenIds: ctx.tokenIds!.subarray(t, t + 1) })).routing as SparseRouting;
                const inBatch: number[] = [];
                for (let a = 0; a < whole.tokenIdx.length; a++) if (whole.tokenIdx[a] === t) inBatch.push(whole.expertIdx[a]);
                assert.deepEqual(Array.from(alone.expertIdx), inBatch, `${name}: token ${t}`);
              }
            });
          }
        });
      }
    });
  }
}

export function expertConformance(names: string[], backends: { name: BackendName; make: () => Promise<Backend> }[]): void {
  for (const b of backends) {
    onBackend(b, () => {
      for (const name of names) {
        const spec: ExpertSpec = expertRegistry.spec(name);
        describe(`expert type ${name}`, () => {
          const bank = (seed = 1): ExpertBank => expertRegistry.get(name)({ numExperts: 3, dModel: 4, dFF: 5 }, new Rng(seed));
          test('grouped forward equals the per-row float64 reference', () => {
            const bk = bank();
            const sizes = Int32Array.from([2, 0, 3]);
            const x = randn(new Rng(2), [5, 4], false);
            const y = noGrad(() => bk.forwardGrouped(x, sizes));
            const rows = [0, 0, 2, 2, 2];
            const ref = new Float64Array(20);
            rows.forEach((e, r) => ref.set(bk.referenceForward!(e, x.data.subarray(r * 4, r * 4 + 4)), r * 4));
            assertClose(y.data, ref, 1e-5, 1e-4, name);
            assert.ok(bk.flopsPerToken(0) > 0);
          });
          test('gradients match finite differences (x and every parameter)', () => {
            const bk = bank(3);
            const x = randn(new Rng(4), [4, 4]);
            gradcheck(`experts ${name}`, (xx) => bk.forwardGrouped(xx, Int32Array.from([1, 2, 1])), [x, ...bk.parameters()], { eps: 1e-3, atol: 2e-3, rtol: 1e-2 });
          });
          test('deterministic under a seed', () => {
            const p = (seed: number) =>
              bank(seed)
                .namedParameters()
                .map(([n, t]) => [n, Array.from(t.data)]);
            assert.deepEqual(p(5), p(5));
            assert.notDeepEqual(p(5), p(6));
          });
          test('a bad or unknown option fails naming the expert type and the option', () => {
            const make = (extra: Record<string, unknown>) => expertRegistry.get(name)({ numExperts: 3, dModel: 4, dFF: 5, ...extra }, new Rng(0));
            throwsMessage(() => make({ noSuchOption: 1 }), new RegExp(`^experts "${name}": unknown noSuchOption`));
            for (const opt of Object.keys(spec.options)) {
              throwsMessage(() => make({ [opt]: BAD_VALUE }), new RegExp(`^experts "${name}": ${opt} must .*, got "${BAD_VALUE}"`), `${name}.${opt}`);
            }
          });
          if (spec.createShared) {
            test('shared experts equal their float64 reference', () => {
              const layer = new MoELayer(
                { dModel: 4, numExperts: 2, topK: 1, experts: { type: name, dFF: 3 }, router: { type: routerRegistry.names()[0] }, sharedExperts: { count: 2, dFF: 3 } },
                new Rng(8),
              );
              const x = randn(new Rng(9), [3, 4], false);
              const y = noGrad(() => layer.shared!.forward(x));
              for (let t = 0; t < 3; t++) assertClose(y.data.subarray(t * 4, t * 4 + 4), layer.shared!.referenceForward(x.data.subarray(t * 4, t * 4 + 4)), 1e-5, 1e-4, `${name} shared row ${t}`);
            });
          }
        });
      }
    });
  }
}

export function dispatchConformance(names: string[], backends: { name: BackendName; make: () => Promise<Backend> }[]): void {
  for (const b of backends) {
    onBackend(b, () => {
      for (const name of names) {
        const spec: DispatchSpec = dispatchRegistry.spec(name);
        // any registered router making the routing kind this dispatch consumes
        const router = routerRegistry.specs().find((r) => r.traits.routing === spec.routing);
        describe(`dispatch ${name}`, () => {
          const setup = (seed: number) => {
            const bank = expertRegistry.get(expertRegistry.names()[0])({ numExperts: E, dModel: D, dFF: 5 }, new Rng(seed));
            const r = routerRegistry.get(router!.name)({ type: router!.name, dModel: D, numExperts: E, topK: K }, new Rng(seed + 1));
            const opts = dispatchSchema(spec).parse({ type: name, ...(spec.configDefaults ?? {}) }) as never;
            return { bank, r, opts };
          };
          test('equals the float64 reference (with its own capacity mask) and is differentiable', (t) => {
            if (!router) return t.skip(`no router makes ${spec.routing} routing`);
            const { bank, r, opts } = setup(1);
            const x = randn(new Rng(3), [T, D], false);
            const out = noGrad(() => r.route(x, ctxOf(false, T)));
            const res = noGrad(() => spec.run(x, out.routing, bank, opts));
            const ref = out.routing.kind === 'soft' ? referenceSoft(x, out.routing, bank) : referenceSparse(x, out.routing, bank, res.kept);
            assertClose(res.y.data, ref, 1e-5, 1e-4, name);
            assert.equal(res.sizes.length, E);
            // the routing is fixed (computed once, without gradients): only the dispatch and the experts are checked
            const xs = randn(new Rng(4), [4, D]);
            const fixed = noGrad(() => r.route(xs, ctxOf(false, 4))).routing;
            gradcheck(`dispatch ${name}`, (xx) => spec.run(xx, fixed, bank, opts).y, [xs, ...bank.parameters()], { eps: 1e-3, atol: 5e-3, rtol: 2e-2 });
          });
          test('an unknown option fails naming the dispatch field', () => {
            assert.throws(
              () =>
                new MoELayer({
                  dModel: D,
                  numExperts: E,
                  topK: K,
                  experts: { type: expertRegistry.names()[0], dFF: 3 },
                  router: { type: router?.name ?? routerRegistry.names()[0] },
                  dispatch: { type: name, ...(spec.configDefaults ?? {}), noSuchOption: 1 },
                }),
              spec.routing === 'sparse' ? /unknown field config\.dispatch\.noSuchOption/ : /config\.dispatch\.type must be/,
            );
          });
        });
      }
    });
  }
}
