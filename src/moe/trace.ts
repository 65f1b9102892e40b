/**
 * Per-token routing traces: which experts each token of a forward call went to, read from the
 * layer's routing record (MoEAux.router.routing). For display (`generate --show-routing`,
 * `eval --trace`) and analysis; it never changes the computation.
 */
import type { MoEAux } from './types.js';

/** One token's experts in one MoE layer, highest weight first. */
export interface TokenExperts {
  /** The experts that computed on this token (its number of experts actually used is experts.length). */
  experts: number[];
  weights: number[];
  /** Experts the token was assigned to but whose capacity dropped it (capacity dispatch), if any. */
  dropped?: number[];
}

/**
 * For each of the `tokens` rows of one MoE layer call, its experts and combine weights. Sparse
 * routing lists the assignments an expert computed (a token may have 0..E: dynamic routers; null
 * experts and masked tokens are never listed; capacity-dropped ones go to `dropped`); soft routing
 * has no discrete choice, so a token's experts are those whose slots reach its output (positive
 * combine mass, the sum of its combine weights over that expert's slots), at most `softTop` of
 * them (default: all). MH-MoE sub-tokens (a record of tokens * h rows) are listed under their token.
 */
export function tokenExperts(aux: MoEAux, tokens: number, softTop = Infinity): TokenExperts[] {
  const out: TokenExperts[] = Array.from({ length: tokens }, () => ({ experts: [], weights: [] }));
  const r = aux.router.routing;
  // MH-MoE routes h sub-tokens per token (rows t*h .. t*h+h-1): each token lists its sub-tokens' experts, h*k for top-k
  const p = aux.router.probs;
  const rows = p.ndim === 2 ? p.shape[0] : tokens;
  const h = tokens > 0 && rows > tokens && rows % tokens === 0 ? rows / tokens : 1;
  if (r.kind === 'sparse') {
    const w = r.weights.data;
    const kept = aux.kept;
    if (kept && kept.length !== r.tokenIdx.length) throw new Error(`tokenExperts: kept has ${kept.length} entries, routing has ${r.tokenIdx.length} assignments`);
    for (let a = 0; a < r.tokenIdx.length; a++) {
      const t = Math.floor(r.tokenIdx[a] / h);
      if (r.tokenIdx[a] < 0 || t >= tokens) throw new Error(`tokenExperts: assignment ${a} names token ${r.tokenIdx[a]}, outside the ${tokens * h} ${h > 1 ? 'sub-tokens' : 'tokens'} of this call`);
      if (kept && !kept[a]) (out[t].dropped ??= []).push(r.expertIdx[a]);
      else {
        out[t].experts.push(r.expertIdx[a]);
        out[t].weights.push(w[a]);
      }
    }
  } else {
    const S = r.slotsPerExpert;
    const cols = r.combine.shape[1];
    const E = Math.round(cols / S);
    const c = r.combine.data;
    for (let t = 0; t < tokens; t++) {
      const mass = new Array<number>(E).fill(0);
      for (let row = t * h; row < (t + 1) * h; row++) for (let j = 0; j < cols; j++) mass[Math.floor(j / S)] += c[row * cols + j] / h;
      const top = mass
        .map((m, e) => [m, e] as const)
        .filter(([m]) => m > 0)
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

/** One MoE record's per-token experts: its layer and, where a layer has several MoE sub-layers (CartesianMoE's A and B), which one. */
export interface LayerTrace {
  layer: number;
  /** 0, 1, ... for the sub-layers of a layer with more than one MoE record; absent otherwise. */
  sub?: number;
  experts: TokenExperts[];
}

/** tokenExperts of every record of one model forward, numbering the sub-layers of a layer that yields several records. */
export function traceLayers(records: readonly { layer: number; aux: MoEAux; sub?: number }[], tokens: number): LayerTrace[] {
  const count = new Map<number, number>();
  for (const r of records) count.set(r.layer, (count.get(r.layer) ?? 0) + 1);
  const seen = new Map<number, number>();
  return records.map((r) => {
    const nth = seen.get(r.layer) ?? 0;
    seen.set(r.layer, nth + 1);
    return { layer: r.layer, ...((count.get(r.layer) ?? 0) > 1 ? { sub: r.sub ?? nth } : {}), experts: tokenExperts(r.aux, tokens) };
  });
}
