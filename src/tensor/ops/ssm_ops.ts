/**
 * State-space ops for Mamba blocks (Mamba: Linear-Time Sequence Modeling with Selective State
 * Spaces, Gu & Dao 2023): a causal depthwise conv1d over time and the selective scan, each one
 * fused loop over time on Float32Arrays with its hand-written backward. Rows are tokens of
 * `batch` sequences of `seqLen` each ([batch * seqLen, channels], sequence-major), the layout of
 * a Linear's output. Both take the state of earlier tokens (no gradient through it) and can hand
 * back the state after the last token, which is what recurrent generation carries.
 */
import { Tensor, result, accumulateGrad, isGradEnabled } from '../tensor.js';
import { formatShape } from '../shape.js';

function checkRows(op: string, name: string, t: Tensor, rows: number, cols: number): void {
  if (t.ndim !== 2 || t.shape[0] !== rows || t.shape[1] !== cols) throw new Error(`${op}: ${name} must be [${rows}, ${cols}], got ${formatShape(t.shape)}`);
}

function checkLayout(op: string, x: Tensor, batch: number, seqLen: number): void {
  if (!Number.isInteger(batch) || batch < 1 || !Number.isInteger(seqLen) || seqLen < 1) throw new Error(`${op}: batch and seqLen must be positive integers, got ${batch} and ${seqLen}`);
  if (x.ndim !== 2 || x.shape[0] !== batch * seqLen) throw new Error(`${op}: x must be [batch * seqLen = ${batch * seqLen}, channels], got ${formatShape(x.shape)}`);
}

/**
 * Causal depthwise conv1d: y[b,t,c] = bias[c] + sum_k w[c,k] x[b, t-K+1+k, c], positions before the
 * sequence start read `prefix` ([batch, K-1, C], the previous K-1 inputs; zeros when absent).
 * x [batch*seqLen, C], w [C, 1, K] (PyTorch's depthwise layout) or [C, K], bias [C] or null.
 */
export function causalConv1d(x: Tensor, w: Tensor, bias: Tensor | null, batch: number, seqLen: number, prefix?: Float32Array): Tensor {
  checkLayout('causalConv1d', x, batch, seqLen);
  const C = x.shape[1];
  const K = w.shape[w.ndim - 1];
  if (w.shape[0] !== C || w.size !== C * K) throw new Error(`causalConv1d: weight must be [${C}, 1, K], got ${formatShape(w.shape)}`);
  if (bias && bias.size !== C) throw new Error(`causalConv1d: bias must be [${C}], got ${formatShape(bias.shape)}`);
  const P = K - 1;
  if (prefix && prefix.length !== batch * P * C) throw new Error(`causalConv1d: prefix must hold batch * (K-1) * C = ${batch * P * C} values, got ${prefix.length}`);
  const xd = x.data;
  const wd = w.data;
  const bd = bias?.data;
  const out = new Float32Array(x.size);
  // the row of input position s of sequence b: x itself, or the prefix (zeros when absent) before the start
  const zero = new Float32Array(C);
  const src = (b: number, s: number): [Float32Array, number] => (s >= 0 ? [xd, (b * seqLen + s) * C] : prefix ? [prefix, (b * P + P + s) * C] : [zero, 0]);
  // taps as [K, C] so the channel loop is contiguous
  const wt = new Float32Array(K * C);
  for (let c = 0; c < C; c++) for (let k = 0; k < K; k++) wt[k * C + c] = wd[c * K + k];
  for (let b = 0; b < batch; b++)
    for (let t = 0; t < seqLen; t++) {
      const o = (b * seqLen + t) * C;
      if (bd) out.set(bd, o);
      for (let k = 0; k < K; k++) {
        const [a, so] = src(b, t - P + k);
        const wo = k * C;
        for (let c = 0; c < C; c++) out[o + c] += wt[wo + c] * a[so + c];
      }
    }
  return result(out, x.shape, bias ? [x, w, bias] : [x, w], (g) => {
    const gx = x.requiresGrad ? new Float32Array(x.size) : null;
    const gwt = w.requiresGrad ? new Float64Array(K * C) : null;
    const gb = bias?.requiresGrad ? new Float64Array(C) : null;
    for (let b = 0; b < batch; b++)
      for (let t = 0; t < seqLen; t++) {
        const o = (b * seqLen + t) * C;
        if (gb) for (let c = 0; c < C; c++) gb[c] += g[o + c];
        for (let k = 0; k < K; k++) {
          const s = t - P + k;
          const wo = k * C;
          if (gwt) {
            const [a, so] = src(b, s);
            for (let c = 0; c < C; c++) gwt[wo + c] += g[o + c] * a[so + c];
          }
          if (gx && s >= 0) {
            const xo = (b * seqLen + s) * C;
            for (let c = 0; c < C; c++) gx[xo + c] += g[o + c] * wt[wo + c];
          }
        }
      }
    if (gx) accumulateGrad(x, gx, true);
    if (gwt) {
      const gw = new Float32Array(w.size);
      for (let c = 0; c < C; c++) for (let k = 0; k < K; k++) gw[c * K + k] = gwt[k * C + c];
      accumulateGrad(w, gw, true);
    }
    if (gb && bias) accumulateGrad(bias, Float32Array.from(gb), true);
  });
}

/** The last K-1 inputs of each sequence after `x` ([batch, K-1, C]), continuing `prefix`: the conv state for the next call. */
export function convState(x: Tensor, K: number, batch: number, seqLen: number, prefix?: Float32Array): Float32Array {
  checkLayout('convState', x, batch, seqLen);
  const C = x.shape[1];
  const P = K - 1;
  const out = new Float32Array(batch * P * C);
  for (let b = 0; b < batch; b++)
    for (let j = 0; j < P; j++) {
      const s = seqLen - P + j; // position in x; negative: still in the prefix
      for (let c = 0; c < C; c++) out[(b * P + j) * C + c] = s >= 0 ? x.data[(b * seqLen + s) * C + c] : prefix ? prefix[(b * P + P + s) * C + c] : 0;
    }
  return out;
}

/** softplus(v) = log(1 + e^v), linear above 20 like PyTorch's threshold (no overflow). */
function softplus(v: number): number {
  return v > 20 ? v : Math.log1p(Math.exp(v));
}

/** Options of the selective scan: the state before the first token, and where to write the state after the last. */
export interface SelectiveScanOptions {
  /** SSM state [batch, D, N] before the first position (zeros when absent); no gradient flows into it. */
  h0?: Float32Array;
  /** Receives the state [batch, D, N] after the last position (recurrent generation). */
  stateOut?: Float32Array;
}

/**
 * The selective scan of Mamba (S6) with input-dependent step Δ and projections B, C:
 *   Δ_t = softplus(dt_t),  A = -exp(aLog),
 *   h_t = exp(Δ_t A) ⊙ h_{t-1} + Δ_t B_t u_t,   y_t = C_t · h_t + dSkip ⊙ u_t,
 * per channel d with a state of N values. u, dt [batch*seqLen, D]; aLog [D, N]; bm, cm
 * [batch*seqLen, N] (shared by all channels of a token); dSkip [D]. Returns y [batch*seqLen, D].
 * One sequential loop over time per sequence (O(T D N)); the backward runs it in reverse from the
 * stored states, with gradients for every input.
 */
export function selectiveScan(u: Tensor, dt: Tensor, aLog: Tensor, bm: Tensor, cm: Tensor, dSkip: Tensor, batch: number, seqLen: number, opts: SelectiveScanOptions = {}): Tensor {
  checkLayout('selectiveScan', u, batch, seqLen);
  const rows = batch * seqLen;
  const D = u.shape[1];
  if (aLog.ndim !== 2 || aLog.shape[0] !== D) throw new Error(`selectiveScan: aLog must be [${D}, N], got ${formatShape(aLog.shape)}`);
  const N = aLog.shape[1];
  checkRows('selectiveScan', 'dt', dt, rows, D);
  checkRows('selectiveScan', 'B', bm, rows, N);
  checkRows('selectiveScan', 'C', cm, rows, N);
  if (dSkip.size !== D) throw new Error(`selectiveScan: D must be [${D}], got ${formatShape(dSkip.shape)}`);
  if (opts.h0 && opts.h0.length !== batch * D * N) throw new Error(`selectiveScan: h0 must hold batch * D * N = ${batch * D * N} values, got ${opts.h0.length}`);
  if (opts.stateOut && opts.stateOut.length !== batch * D * N) throw new Error(`selectiveScan: stateOut must hold batch * D * N = ${batch * D * N} values, got ${opts.stateOut.length}`);
  const ud = u.data;
  const dtd = dt.data;
  const bd = bm.data;
  const cd = cm.data;
  const sd = dSkip.data;
  const A = new Float64Array(D * N);
  for (let i = 0; i < D * N; i++) A[i] = -Math.exp(aLog.data[i]);
  const parents = [u, dt, aLog, bm, cm, dSkip];
  const needGrad = isGradEnabled() && parents.some((p) => p.requiresGrad);
  // every state h_t and decay exp(Δ_t A), kept for the backward only (it then needs no exp)
  const hs = needGrad ? new Float32Array(rows * D * N) : null;
  const decay = needGrad ? new Float32Array(rows * D * N) : null;
  const out = new Float32Array(rows * D);
  const h = new Float64Array(D * N);
  for (let b = 0; b < batch; b++) {
    if (opts.h0) for (let i = 0; i < D * N; i++) h[i] = opts.h0[b * D * N + i];
    else h.fill(0);
    for (let t = 0; t < seqLen; t++) {
      const r = b * seqLen + t;
      const bo = r * N;
      for (let d = 0; d < D; d++) {
        const delta = softplus(dtd[r * D + d]);
        const x = ud[r * D + d];
        const dx = delta * x;
        const ho = d * N;
        const so = (r * D + d) * N;
        let y = 0;
        if (hs && decay) {
          for (let n = 0; n < N; n++) {
            const a = Math.exp(delta * A[ho + n]);
            const hv = a * h[ho + n] + dx * bd[bo + n];
            h[ho + n] = hv;
            hs[so + n] = hv;
            decay[so + n] = a;
            y += cd[bo + n] * hv;
          }
        } else {
          for (let n = 0; n < N; n++) {
            const hv = Math.exp(delta * A[ho + n]) * h[ho + n] + dx * bd[bo + n];
            h[ho + n] = hv;
            y += cd[bo + n] * hv;
          }
        }
        out[r * D + d] = y + sd[d] * x;
      }
    }
    if (opts.stateOut) for (let i = 0; i < D * N; i++) opts.stateOut[b * D * N + i] = h[i];
  }
  const h0 = opts.h0;
  return result(out, [rows, D], parents, (g) => {
    const H = hs!;
    const Ad = decay!;
    const gu = new Float32Array(rows * D);
    const gdt = new Float32Array(rows * D);
    const gA = new Float64Array(D * N);
    const gB = new Float32Array(rows * N);
    const gC = new Float32Array(rows * N);
    const gS = new Float64Array(D);
    // dL/dh_t from the future, per channel and state: reverse time, channels inner (contiguous rows)
    const dh = new Float64Array(D * N);
    for (let b = 0; b < batch; b++) {
      dh.fill(0);
      for (let t = seqLen - 1; t >= 0; t--) {
        const r = b * seqLen + t;
        const bo = r * N;
        for (let d = 0; d < D; d++) {
          const gy = g[r * D + d];
          const x = ud[r * D + d];
          const raw = dtd[r * D + d];
          const delta = softplus(raw);
          gS[d] += gy * x;
          let gx = gy * sd[d];
          let gdelta = 0;
          const so = (r * D + d) * N;
          const po = so - D * N; // h_{t-1} (t > 0)
          const ho = d * N;
          const hb = (b * D + d) * N;
          for (let n = 0; n < N; n++) {
            gC[bo + n] += gy * H[so + n];
            const dhn = dh[ho + n] + gy * cd[bo + n];
            const a = Ad[so + n];
            const hp = t > 0 ? H[po + n] : h0 ? h0[hb + n] : 0;
            const ga = dhn * hp * a; // d/d(ΔA) of exp(ΔA) h_{t-1}
            const bn = bd[bo + n];
            gdelta += ga * A[ho + n] + dhn * bn * x;
            gA[ho + n] += ga * delta;
            gB[bo + n] += dhn * delta * x;
            gx += dhn * delta * bn;
            dh[ho + n] = dhn * a;
          }
          gu[r * D + d] = gx;
          // softplus' = sigmoid
          gdt[r * D + d] = raw > 20 ? gdelta : gdelta / (1 + Math.exp(-raw));
        }
      }
    }
    if (u.requiresGrad) accumulateGrad(u, gu, true);
    if (dt.requiresGrad) accumulateGrad(dt, gdt, true);
    if (aLog.requiresGrad) {
      // A = -exp(aLog): dA/daLog = A
      const ga = new Float32Array(D * N);
      for (let i = 0; i < D * N; i++) ga[i] = gA[i] * A[i];
      accumulateGrad(aLog, ga, true);
    }
    if (bm.requiresGrad) accumulateGrad(bm, gB, true);
    if (cm.requiresGrad) accumulateGrad(cm, gC, true);
    if (dSkip.requiresGrad) accumulateGrad(dSkip, Float32Array.from(gS), true);
  });
}
