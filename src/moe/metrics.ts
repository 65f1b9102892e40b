/**
 * Per-call routing metrics: cheap plain loops over the routing record, no autograd.
 *
 * expertsPerToken is the experts actually computed per token: expert FFN evaluations (rows an
 * expert processes) / tokens, so it is the expert compute in units of one expert on one token.
 * Sparse routing: tokensPerExpert counts the assignments that survived capacity
 * (kept[i] = 1; all kept when `kept` is absent), expertsPerToken = kept assignments / tokens
 * (null experts and masked tokens are never listed, so they count as no compute),
 * droppedFraction = dropped / listed assignments.
 * Soft routing (every slot mixes every token, nothing is dropped): tokensPerExpert[e] is the
 * column sum of probs (sum over tokens of the share of the token's output that expert e produces;
 * adds up to T), expertsPerToken = numExperts * slotsPerExpert / tokens (each expert runs on its
 * slots, not on the tokens: Soft MoE FLOP-matched at S = T k / E gives k; Mixture of Tokens'
 * sparse transition mode, one slot per token and expert, gives numExperts), droppedFraction = 0.
 * loadCV = population std / mean of tokensPerExpert and maxOverMean = max / mean (both 0 when no
 * load); routerEntropy = mean over tokens of -sum_e p ln p of probs (nats).
 */
import type { RouterOutput, RoutingMetrics } from './types.js';
import { softmaxStats } from '../tensor/index.js';

export function computeRoutingMetrics(out: RouterOutput, numExperts: number, tokens: number, kept?: Uint8Array): RoutingMetrics {
  const E = numExperts;
  const load = new Float64Array(E);
  const p = out.probs.data;
  if (out.probs.size !== tokens * E) {
    throw new Error(`computeRoutingMetrics: probs [${out.probs.shape.join(', ')}] do not match tokens=${tokens} x numExperts=${E}`);
  }
  let droppedFraction = 0;
  let expertsPerToken: number;
  const r = out.routing;
  if (r.kind === 'sparse') {
    const A = r.expertIdx.length;
    if (kept && kept.length !== A) throw new Error(`computeRoutingMetrics: kept has ${kept.length} entries, routing has ${A} assignments`);
    let nKept = 0;
    for (let i = 0; i < A; i++) {
      if (kept && !kept[i]) continue;
      const e = r.expertIdx[i];
      if (e < 0 || e >= E) throw new Error(`computeRoutingMetrics: assignment ${i} has expert ${e} outside [0, ${E})`);
      load[e]++;
      nKept++;
    }
    droppedFraction = A > 0 ? (A - nKept) / A : 0;
    expertsPerToken = tokens > 0 ? nKept / tokens : 0;
  } else {
    for (let t = 0; t < tokens; t++) for (let e = 0; e < E; e++) load[e] += p[t * E + e];
    expertsPerToken = tokens > 0 ? (E * r.slotsPerExpert) / tokens : 0;
  }
  let total = 0;
  let mx = 0;
  for (let e = 0; e < E; e++) {
    total += load[e];
    if (load[e] > mx) mx = load[e];
  }
  const m = E > 0 ? total / E : 0;
  let v = 0;
  for (let e = 0; e < E; e++) v += (load[e] - m) ** 2;
  const std = E > 0 ? Math.sqrt(v / E) : 0;
  let h = 0;
  const st = softmaxStats(out.probs);
  if (st && st.probs === out.probs) {
    // probs = softmax(z) from the fused router op: -sum p ln p = lse - sum p z per row, no logs
    const zd = st.logits.data;
    for (let t = 0; t < tokens; t++) {
      let pz = 0;
      for (let e = t * E; e < t * E + E; e++) if (p[e] > 0) pz += p[e] * zd[e];
      if (pz !== 0 || st.lse[t] !== -Infinity) h += st.lse[t] - pz;
    }
  } else for (let i = 0; i < tokens * E; i++) if (p[i] > 0) h -= p[i] * Math.log(p[i]);
  return {
    tokensPerExpert: load,
    loadCV: m > 0 ? std / m : 0,
    maxOverMean: m > 0 ? mx / m : 0,
    droppedFraction,
    routerEntropy: tokens > 0 ? h / tokens : 0,
    expertsPerToken,
    extra: { ...out.metrics },
  };
}

/**
 * Experts computed per token in one model forward: the records of each layer summed (an FFN kind
 * with several MoE sub-layers, CartesianMoE's A and B, uses k_A + k_B sub-experts per token), then
 * the mean over layers. 0 without records (a dense model).
 */
export function expertsPerTokenOfLayers(records: readonly { layer: number; aux: { metrics: Pick<RoutingMetrics, 'expertsPerToken'> } }[]): number {
  const perLayer = new Map<number, number>();
  for (const r of records) perLayer.set(r.layer, (perLayer.get(r.layer) ?? 0) + r.aux.metrics.expertsPerToken);
  if (!perLayer.size) return 0;
  let s = 0;
  for (const v of perLayer.values()) s += v;
  return s / perLayer.size;
}
