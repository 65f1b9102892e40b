/**
 * Per-token routing traces: which experts each token of a forward call went to, read from the
 * layer's routing record (MoEAux.router.routing). For display (`generate --show-routing`,
 * `eval --trace`) and analysis; it never changes the computation.
 */
import type { MoEAux } from './types.js';

/** One token's experts in one MoE layer, highest weight first. */
export interface TokenExperts {
  experts: number[];
  weights: number[];
}

/**
 * For each of the `tokens` rows of one MoE layer call, its experts and combine weights. Sparse
 * routing lists the assignments (a token may have 0..E: dynamic routers, null experts); soft
 * routing has no discrete choice, so each token gets its `softTop` experts by combine mass
 * (the sum of its combine weights over that expert's slots).
 */
export function tokenExperts(aux: MoEAux, tokens: number, softTop = 2): TokenExperts[] {
  const out: TokenExperts[] = Array.from({ length: tokens }, () => ({ experts: [], weights: [] }));
  const r = aux.router.routing;
  if (r.kind === 'sparse') {
    const w = r.weights.data;
    for (let a = 0; a < r.tokenIdx.length; a++) {
      const t = r.tokenIdx[a];
      if (t < 0 || t >= tokens) throw new Error(`tokenExperts: assignment ${a} names token ${t}, outside the ${tokens} tokens of this call`);
      out[t].experts.push(r.expertIdx[a]);
      out[t].weights.push(w[a]);
    }
  } else {
    const S = r.slotsPerExpert;
    const cols = r.combine.shape[1];
    const E = Math.round(cols / S);
    const c = r.combine.data;
    for (let t = 0; t < tokens; t++) {
      const mass = new Array<number>(E).fill(0);
      for (let j = 0; j < cols; j++) mass[Math.floor(j / S)] += c[t * cols + j];
      const top = mass
        .map((m, e) => [m, e] as const)
        .sort((x, y) => y[0] - x[0])
        .slice(0, softTop);
      out[t] = { experts: top.map(([, e]) => e), weights: top.map(([m]) => m) };
    }
  }
  for (const te of out) {
    const order = te.experts.map((_, i) => i).sort((i, j) => te.weights[j] - te.weights[i] || te.experts[i] - te.experts[j]);
    te.experts = order.map((i) => te.experts[i]);
    te.weights = order.map((i) => te.weights[i]);
  }
  return out;
}
