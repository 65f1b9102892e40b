/**
 * Routing overrides: a hook on MoELayer that rewrites the router's choice of experts after the
 * router ran and before dispatch, for any router whose logits rank the experts. Forcing and
 * forbidding experts at inference (Mixture of Tunable Experts: Behavior Modification of
 * DeepSeek-R1 at Inference Time, 2025), the weak "rank-k" activation of self-contrast decoding
 * (Unchosen Experts Can Contribute Too: Unleashing MoE Models' Power by Self-Contrast, 2024) and
 * test-time re-routing are all overrides; no router is special-cased.
 */
import { Tensor } from '../tensor/tensor.js';
import type { RouterOutput } from './types.js';

/** What an override knows about the layer it runs in. */
export interface OverrideInfo {
  numExperts: number;
  topK: number;
  /** The router's registered name (for errors). */
  router: string;
  /** Why this router's logits do not rank experts (RouterTraits.noLogits), if so. */
  noLogits?: string;
}

/** Rewrites one MoE layer call's routing. x is the router's input [T, d]. */
export interface RoutingOverride {
  readonly name: string;
  apply(x: Tensor, out: RouterOutput, info: OverrideInfo): RouterOutput;
}

/** The override's preconditions: sparse routing and logits that rank experts; a one-line error otherwise. */
export function checkOverridable(out: RouterOutput, info: OverrideInfo, what: string): number {
  if (info.noLogits) throw new Error(`${what}: router "${info.router}" has no logits that rank experts (${info.noLogits})`);
  if (out.routing.kind !== 'sparse') throw new Error(`${what}: router "${info.router}" routes softly (every slot mixes all tokens); overrides need sparse (token, expert) routing`);
  const l = out.logits;
  if (l.ndim !== 2 || l.shape[1] !== info.numExperts) throw new Error(`${what}: router "${info.router}" returned logits of shape [${l.shape.join(', ')}], expected [tokens, ${info.numExperts}]`);
  return l.shape[0];
}

/**
 * Replace each token's set of experts by `choose(t, current)`, or keep it where that returns null. Tokens whose set is
 * unchanged keep the router's weights bit for bit; a changed set gets the router's probabilities
 * of its experts, rescaled so the token keeps the total combine weight the router gave it (exactly
 * the renormalised top-k weights of a Mixtral-style router; 1 for a token the router gave no expert).
 * `scores` [T, E] replaces the probabilities for those weights (re-routing's blended routing weights).
 * The new weights carry no gradient: overrides are an inference tool.
 */
export function reselect(out: RouterOutput, T: number, E: number, choose: (t: number, current: number[]) => number[] | null, scores?: ArrayLike<number>): RouterOutput {
  const r = out.routing;
  if (r.kind !== 'sparse') throw new Error('reselect: sparse routing required');
  const w = r.weights.data;
  const per: { e: number[]; a: number[] }[] = Array.from({ length: T }, () => ({ e: [], a: [] }));
  for (let a = 0; a < r.tokenIdx.length; a++) {
    const t = r.tokenIdx[a];
    if (t < 0 || t >= T) throw new Error(`reselect: assignment ${a} names token ${t}, outside the ${T} tokens`);
    per[t].e.push(r.expertIdx[a]);
    per[t].a.push(a);
  }
  const p = scores ?? out.probs.data;
  if (p.length !== T * E) throw new Error(`reselect: ${p.length} scores for ${T} tokens x ${E} experts`);
  const tok: number[] = [];
  const exp: number[] = [];
  const wts: number[] = [];
  const pri: number[] = [];
  let changed = false;
  for (let t = 0; t < T; t++) {
    const cur = per[t];
    const next = choose(t, cur.e.slice());
    const same = next === null || (next.length === cur.e.length && next.every((e) => cur.e.includes(e)) && new Set(next).size === next.length);
    if (same) {
      for (const a of cur.a) {
        tok.push(t);
        exp.push(r.expertIdx[a]);
        wts.push(w[a]);
        pri.push(r.priority ? r.priority[a] : w[a]);
      }
      continue;
    }
    changed = true;
    for (const e of next) if (!(Number.isInteger(e) && e >= 0 && e < E)) throw new Error(`reselect: expert ${e} outside [0, ${E})`);
    let total = 0;
    for (const a of cur.a) total += w[a];
    if (cur.a.length === 0) total = 1;
    let mass = 0;
    for (const e of next) mass += Math.max(0, p[t * E + e]);
    for (const e of next) {
      const v = mass > 0 && Number.isFinite(mass) ? (Math.max(0, p[t * E + e]) / mass) * total : total / next.length;
      tok.push(t);
      exp.push(e);
      wts.push(v);
      pri.push(v);
    }
  }
  if (!changed) return out;
  const weights = new Tensor(Float32Array.from(wts), [wts.length]);
  return {
    ...out,
    routing: { kind: 'sparse', tokenIdx: Int32Array.from(tok), expertIdx: Int32Array.from(exp), weights, priority: Float32Array.from(pri) },
  };
}

/** Experts to force and forbid in one layer, and optionally the weak single-expert activation. */
export interface ExpertOverrideOptions {
  /** Always in each token's set (the lowest-logit unforced choices make room). */
  force?: readonly number[];
  /** Never chosen: as if their logits were -inf before top-k; the next best by logit fill the set. */
  forbid?: readonly number[];
  /**
   * Self-contrast's weak activation: each token uses only the expert of this rank (1 = best) by
   * logit among the experts not forbidden (plus the forced ones), with the token's whole weight.
   */
  rank?: number;
}

/** Force / forbid experts (and rank-r weak routing) in one layer, for any router with ranking logits. */
export class ExpertOverride implements RoutingOverride {
  readonly name = 'expert-override';
  readonly force: number[];
  readonly forbid: Set<number>;
  readonly rank: number | undefined;
  constructor(opts: ExpertOverrideOptions) {
    this.force = [...new Set(opts.force ?? [])];
    this.forbid = new Set(opts.forbid ?? []);
    this.rank = opts.rank;
    for (const e of [...this.force, ...this.forbid]) if (!(Number.isInteger(e) && e >= 0)) throw new Error(`ExpertOverride: expert ${e} must be an integer >= 0`);
    for (const e of this.force) if (this.forbid.has(e)) throw new Error(`ExpertOverride: expert ${e} is both forced and forbidden`);
    if (this.rank !== undefined && !(Number.isInteger(this.rank) && this.rank >= 1)) throw new Error(`ExpertOverride: rank must be an integer >= 1, got ${this.rank}`);
  }

  apply(_x: Tensor, out: RouterOutput, info: OverrideInfo): RouterOutput {
    const T = checkOverridable(out, info, 'ExpertOverride');
    const E = info.numExperts;
    for (const e of [...this.force, ...this.forbid]) if (e >= E) throw new Error(`ExpertOverride: expert ${e} outside the layer's ${E} experts`);
    const allowed = E - this.forbid.size;
    if (allowed === 0) throw new Error(`ExpertOverride: all ${E} experts are forbidden`);
    if (this.rank !== undefined && this.rank > allowed) throw new Error(`ExpertOverride: rank ${this.rank} but only ${allowed} experts are allowed`);
    const L = out.logits.data;
    // experts by descending logit (ties to the lower index), forbidden ones left out
    const order = (t: number): number[] =>
      Array.from({ length: E }, (_, e) => e)
        .filter((e) => !this.forbid.has(e))
        .sort((a, b) => L[t * E + b] - L[t * E + a] || a - b);
    return reselect(out, T, E, (t, cur) => {
      if (this.rank !== undefined) {
        const pick = order(t)[this.rank - 1];
        return [...this.force.filter((e) => e !== pick), pick];
      }
      const hit = cur.some((e) => this.forbid.has(e)) || this.force.some((e) => !cur.includes(e));
      if (!hit) return null;
      const k = Math.max(cur.length, this.force.length);
      const rank = order(t);
      const byLogit = (a: number, b: number) => L[t * E + b] - L[t * E + a] || a - b;
      // forced first, then the router's own allowed choices, then the next best by logit
      const kept = cur.filter((e) => !this.forbid.has(e) && !this.force.includes(e)).sort(byLogit);
      const set = [...this.force, ...kept];
      if (cur.length > 0) for (const e of rank) if (set.length < k && !set.includes(e)) set.push(e);
      return set.slice(0, k);
    });
  }
}

/** A per-layer expert override: `layer` is the decoder layer index (as in routing traces). */
export interface LayerExpertOverride extends ExpertOverrideOptions {
  layer: number;
}

/**
 * Parse `L:E` specs (`--force-expert 1:3`, several allowed, `L:E1,E2` for more experts in a layer)
 * into per-layer force/forbid lists. Errors name the flag.
 */
export function parseExpertSpecs(force: readonly string[] = [], forbid: readonly string[] = []): LayerExpertOverride[] {
  const by = new Map<number, { force: number[]; forbid: number[] }>();
  const one = (spec: string, flag: string, into: 'force' | 'forbid') => {
    const m = /^(\d+):(\d+(?:,\d+)*)$/.exec(spec.trim());
    if (!m) throw new Error(`${flag} must be LAYER:EXPERT (e.g. 0:3, or 0:3,5), got "${spec}"`);
    const layer = Number(m[1]);
    const o = by.get(layer) ?? { force: [], forbid: [] };
    for (const e of m[2].split(',')) o[into].push(Number(e));
    by.set(layer, o);
  };
  for (const s of force) one(s, '--force-expert', 'force');
  for (const s of forbid) one(s, '--forbid-expert', 'forbid');
  return [...by.entries()].sort((a, b) => a[0] - b[0]).map(([layer, o]) => ({ layer, ...(o.force.length ? { force: o.force } : {}), ...(o.forbid.length ? { forbid: o.forbid } : {}) }));
}
