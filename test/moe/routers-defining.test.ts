// Defining properties the issue-15 audit (docs/moe.md, "Defining-property tests") found untested or
// too weak to fail: GW-MoE's entropy threshold itself, SMoE-Dropout's routing at each k of its
// schedule, MoEC's expert dropout falling back to the next-best unmasked experts, and CompeteSMoE's
// competition schedule.
import '../../src/kernels/index.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Tensor, noGrad } from '../../src/tensor/index.js';
import { Rng } from '../../src/tensor/random.js';
import type { Router, RouterContext, RouterOutput, SparseRouting } from '../../src/moe/types.js';
import { routerRegistry } from '../../src/moe/routers/index.js';
import type { SMoEDropoutRouter } from '../../src/moe/routers/smoe-dropout.js';
import { randn } from '../helpers/gradcheck.js';

const D = 6;
const make = <R extends Router = Router>(type: string, opts: Record<string, unknown> = {}, dims = { numExperts: 4, topK: 2 }): R =>
  routerRegistry.get(type)({ type, dModel: D, ...dims, ...opts }, new Rng(3)) as R;
const ctx = (training: boolean, step = 0, seed = 1): RouterContext => ({ training, step, totalSteps: 100, rng: new Rng(seed) });
function perToken(o: RouterOutput, T: number): number[][] {
  const r = o.routing as SparseRouting;
  assert.equal(r.kind, 'sparse');
  const out: number[][] = Array.from({ length: T }, () => []);
  for (let a = 0; a < r.tokenIdx.length; a++) out[r.tokenIdx[a]].push(r.expertIdx[a]);
  return out;
}
/** Indices of the k largest of row among `allowed`, largest first (ties: lower index). */
const topOf = (row: ArrayLike<number>, k: number, allowed: (e: number) => boolean = () => true): number[] =>
  Array.from(row, (v, i) => [v, i] as const)
    .filter(([, i]) => allowed(i))
    .sort((a, b) => b[0] - a[0] || a[1] - b[1])
    .slice(0, k)
    .map(([, i]) => i);
/** Tokens of increasing scale: routing from near-uniform (tiny x) to sharp (large x). */
function spread(T: number, seed: number): Tensor {
  const x = randn(new Rng(seed), [T, D], false);
  for (let t = 0; t < T; t++) for (let i = 0; i < D; i++) x.data[t * D + i] *= 0.05 * Math.exp((6 * t) / T);
  return x;
}

test('gw-moe: a token is broadcast to every expert exactly when its routing entropy exceeds threshold * ln E', () => {
  const T = 60;
  const E = 4;
  const r = make('gw-moe', { threshold: 0.8 }, { numExperts: E, topK: 1 });
  for (const p of r.parameters()) for (let i = 0; i < p.size; i++) p.data[i] *= 10;
  const x = spread(T, 4);
  const o = noGrad(() => r.route(x, ctx(true, 0)));
  const sets = perToken(o, T);
  const p = o.probs.data;
  let wide = 0;
  for (let t = 0; t < T; t++) {
    let h = 0;
    for (let e = 0; e < E; e++) if (p[t * E + e] > 0) h -= p[t * E + e] * Math.log(p[t * E + e]);
    const uncertain = h > 0.8 * Math.log(E);
    if (uncertain) wide++;
    assert.deepEqual(sets[t], uncertain ? [0, 1, 2, 3] : topOf(p.subarray(t * E, t * E + E), 1), `token ${t}: entropy ${h.toFixed(3)} vs ${(0.8 * Math.log(E)).toFixed(3)}`);
  }
  assert.ok(wide > 5 && wide < T - 5, `both kinds of token present: ${wide} of ${T} broadcast`);
  assert.ok(Math.abs(o.metrics.broadcastFraction - wide / T) < 1e-12);
});

test('smoe-dropout: at every step of the schedule each token is routed to the top-k(step) experts of the frozen router', () => {
  const r = make<SMoEDropoutRouter>('smoe-dropout', { startK: 1, growSteps: 8 }, { numExperts: 6, topK: 2 });
  const T = 10;
  const x = randn(new Rng(5), [T, D], false);
  const seen: number[] = [];
  for (let step = 0; step <= 12; step += 2) {
    const o = noGrad(() => r.route(x, ctx(true, step)));
    const k = o.metrics.activeK;
    seen.push(k);
    const sets = perToken(o, T);
    for (let t = 0; t < T; t++) assert.deepEqual(sets[t], topOf(o.probs.data.subarray(t * 6, t * 6 + 6), k), `step ${step} token ${t}`);
  }
  assert.deepEqual(
    seen,
    [...seen].sort((a, b) => a - b),
    'k never shrinks',
  );
  assert.equal(seen[0], 1);
  assert.equal(seen[seen.length - 1], 6, 'k reaches every expert by growSteps');
  // inference: the layer's k, whatever the schedule reached
  for (const s of perToken(
    noGrad(() => r.route(x, ctx(false, 12))),
    T,
  ))
    assert.equal(s.length, 2);
});

test('moec: expert dropout masks (token, expert) pairs with probability expertDropout and the token falls to its next-best unmasked experts', () => {
  const T = 50;
  const E = 6;
  const rate = 0.4;
  const r = make('moec', { expertDropout: rate, clusterSize: 2 }, { numExperts: E, topK: 2 });
  const x = randn(new Rng(6), [T, D], false);
  const o = noGrad(() => r.route(x, ctx(true, 0, 11)));
  // the same draws the router made from ctx.rng
  const u = new Rng(11).fillUniform(new Float32Array(T * E), 0, 1);
  const sets = perToken(o, T);
  const p = o.probs.data;
  let masked = 0;
  let moved = 0;
  for (let t = 0; t < T; t++) {
    const row = p.subarray(t * E, t * E + E);
    const kept = [...Array(E).keys()].filter((e) => u[t * E + e] >= rate);
    const apply = kept.length >= 2;
    if (apply) masked += E - kept.length;
    const want = topOf(row, 2, (e) => !apply || u[t * E + e] >= rate);
    assert.deepEqual(sets[t], want, `token ${t}`);
    if (want.join() !== topOf(row, 2).join()) moved++;
  }
  assert.ok(moved > 5, `dropout re-routed ${moved} tokens`);
  assert.ok(Math.abs(o.metrics.droppedExperts - masked / (T * E)) < 1e-12);
  assert.ok(Math.abs(masked / (T * E) - rate) < 0.12, `masked share ${masked / (T * E)} near ${rate}`);
  // eval: plain top-k
  const ev = perToken(
    noGrad(() => r.route(x, ctx(false))),
    T,
  );
  for (let t = 0; t < T; t++) assert.deepEqual(ev[t], topOf(p.subarray(t * E, t * E + E), 2));
});

test('competesmoe: competition runs on the schedule, in a competeProb share of training forwards (seeded), never at inference', async () => {
  const { MoELayer } = await import('../../src/moe/layer.js');
  const x = randn(new Rng(8), [5, D], false);
  for (const prob of [0, 0.3, 1]) {
    const l = new MoELayer({ dModel: D, numExperts: 4, topK: 2, experts: { type: 'swiglu', dFF: 4 }, router: { type: 'competesmoe', competeProb: prob } }, new Rng(2));
    const rng = new Rng(9);
    let competed = 0;
    const N = 200;
    for (let i = 0; i < N; i++) competed += noGrad(() => l.forward(x, { training: true, step: i, totalSteps: N, rng })).aux.router.metrics.competed;
    if (prob === 0 || prob === 1) assert.equal(competed, prob * N);
    else assert.ok(Math.abs(competed / N - prob) < 0.1, `competed in ${competed} of ${N} forwards`);
    assert.equal(noGrad(() => l.forward(x, ctx(false))).aux.router.metrics.competed, 0);
  }
});
