/**
 * Hash routing: no learned router; each token id goes to fixed expert(s) chosen by a seeded hash,
 * so routing never collapses and costs nothing to learn.
 * Paper: Roller et al., "Hash Layers For Large Sparse Models", 2021.
 *
 * Options: seed (default: drawn from the construction Rng), an integer in [0, 2^24).
 *
 * - Expert j (j < topK) of token id v is fmix32(v, seed, j) scaled to [0, E) — the paper's
 *   "random hash" (a fixed random table over the vocabulary) without storing a table, so any
 *   vocabulary size works. For topK > 1 the k hashes are independent; a collision with an
 *   earlier pick rehashes (then, after 64 tries, probes linearly), so a token's k experts are
 *   distinct.
 * - Weights are the constant 1/k (no gradient: there is nothing to learn).
 * - logits / probs are constants (no gradient): logits[t, e] = 1 for the chosen experts and 0
 *   otherwise, probs[t, e] = 1/k for the chosen experts and 0 otherwise, i.e. the one-hot (k-hot)
 *   routing distribution. Balancing losses therefore contribute no gradient, and a z-loss is a
 *   constant.
 * - The seed is a StateBuffer (saved with checkpoints), so a reloaded model keeps its hash even when
 *   rebuilt from a different construction seed.
 */
import { Tensor } from '../../tensor/tensor.js';
import { fmix32, type Rng } from '../../tensor/random.js';
import { Module, StateBuffer } from '../../nn/module.js';
import type { Router, RouterContext, RouterOutput } from '../types.js';
import { num } from '../../tensor/validate.js';
import { routerRegistry, defineRouter, type ParsedRouterConfig } from './registry.js';
import { checkRouterInput } from './common.js';

const SEED_LIMIT = 1 << 24; // exactly representable in the float32 buffer

/** A uniform-looking 32-bit hash of (token id, seed, hash index, attempt). */
function hash4(id: number, seed: number, j: number, attempt: number): number {
  let h = fmix32((id ^ Math.imul(seed, 0x9e3779b1)) >>> 0);
  h = fmix32((h ^ Math.imul(j + 1, 0x27d4eb2f)) >>> 0);
  if (attempt > 0) h = fmix32((h ^ Math.imul(attempt, 0x165667b1)) >>> 0);
  return h;
}

const options = {
  seed: num(`an integer in [0, ${SEED_LIMIT})`, (v) => Number.isInteger(v) && v >= 0 && v < SEED_LIMIT)
    .optional()
    .describe('hash seed (default: drawn from the construction Rng; saved in checkpoints)'),
};

export type HashRouterConfig = ParsedRouterConfig<typeof options>;

export class HashRouter extends Module implements Router {
  readonly numExperts: number;
  readonly dModel: number;
  readonly topK: number;
  /** The hash seed [1] (a StateBuffer, so checkpoints keep the mapping). */
  readonly hashSeed: StateBuffer;

  constructor(cfg: HashRouterConfig, rng: Rng) {
    super();
    this.numExperts = cfg.numExperts;
    this.dModel = cfg.dModel;
    this.topK = cfg.topK;
    // drawn even when given, so the construction Rng advances the same way either way
    const drawn = rng.nextU32() % SEED_LIMIT;
    const seed = cfg.seed ?? drawn;
    this.hashSeed = new StateBuffer(new Float32Array([seed]), [1]);
  }

  /** The topK distinct experts of token id `id`, in hash order. */
  expertsOf(id: number): number[] {
    const E = this.numExperts;
    const seed = this.hashSeed.data[0];
    const out: number[] = [];
    for (let j = 0; j < this.topK; j++) {
      let e = -1;
      for (let attempt = 0; attempt < 64; attempt++) {
        const c = Math.floor((hash4(id, seed, j, attempt) / 4294967296) * E);
        if (!out.includes(c)) {
          e = c;
          break;
        }
      }
      if (e < 0) {
        e = Math.floor((hash4(id, seed, j, 0) / 4294967296) * E);
        while (out.includes(e)) e = (e + 1) % E;
      }
      out.push(e);
    }
    return out;
  }

  route(x: Tensor, ctx: RouterContext): RouterOutput {
    const T = checkRouterInput('hash', x, this.dModel);
    const ids = ctx.tokenIds;
    if (!ids) throw new Error('router "hash": ctx.tokenIds is required (hash routing picks experts from the token ids)');
    if (ids.length !== T) throw new Error(`router "hash": ctx.tokenIds has ${ids.length} ids but the input has ${T} tokens`);
    const E = this.numExperts;
    const k = this.topK;
    const tokenIdx = new Int32Array(T * k);
    const expertIdx = new Int32Array(T * k);
    const logits = new Float32Array(T * E);
    const probs = new Float32Array(T * E);
    for (let t = 0; t < T; t++) {
      const id = ids[t];
      if (id < 0) throw new Error(`router "hash": ctx.tokenIds[${t}] = ${id} is negative`);
      const es = this.expertsOf(id);
      for (let j = 0; j < k; j++) {
        tokenIdx[t * k + j] = t;
        expertIdx[t * k + j] = es[j];
        logits[t * E + es[j]] = 1;
        probs[t * E + es[j]] = 1 / k;
      }
    }
    return {
      logits: new Tensor(logits, [T, E]),
      probs: new Tensor(probs, [T, E]),
      routing: { kind: 'sparse', tokenIdx, expertIdx, weights: new Tensor(new Float32Array(T * k).fill(1 / k), [T * k]) },
      losses: {},
      metrics: {},
    };
  }
}

routerRegistry.register(
  defineRouter({
    name: 'hash',
    summary: 'fixed hash of the token id, no learned router',
    paper: { authors: 'Roller et al.', title: 'Hash Layers For Large Sparse Models', year: 2021 },
    options,
    traits: {
      routing: 'sparse',
      expertsPerToken: 'k',
      needsTokenIds: true,
      noLogits: 'experts are a fixed hash of the token id',
      usageCaveat: "Routing is a fixed function of the token id, so any domain preference comes from the domains' different byte distributions, not from learning.",
    },
    create: (cfg, rng) => new HashRouter(cfg, rng),
  }),
);
