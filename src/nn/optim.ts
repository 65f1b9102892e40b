/** AdamW (Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization"), gradient clipping, LR schedules. */
import type { Parameter } from './module.js';
import { RowSparseParameter } from './sparse.js';

export interface AdamWOptions {
  lr?: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
  /** Parameters (by identity) exempt from weight decay: norms, biases, by convention. */
  noDecay?: Set<Parameter>;
}

export interface AdamWState {
  step: number;
  m: Float32Array[];
  v: Float32Array[];
}

export class AdamW {
  lr: number;
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly weightDecay: number;
  private readonly noDecay: Set<Parameter>;
  private state: AdamWState;

  constructor(
    readonly params: Parameter[],
    opts: AdamWOptions = {},
  ) {
    this.lr = opts.lr ?? 1e-3;
    this.beta1 = opts.beta1 ?? 0.9;
    this.beta2 = opts.beta2 ?? 0.95;
    this.eps = opts.eps ?? 1e-8;
    this.weightDecay = opts.weightDecay ?? 0.0;
    this.noDecay = opts.noDecay ?? new Set();
    for (const [name, v] of Object.entries({ lr: this.lr, beta1: this.beta1, beta2: this.beta2, eps: this.eps, weightDecay: this.weightDecay })) {
      if (!Number.isFinite(v) || v < 0) throw new Error(`AdamW: ${name} must be a finite non-negative number, got ${v}`);
    }
    if (this.beta1 >= 1 || this.beta2 >= 1) throw new Error('AdamW: betas must be < 1');
    this.state = { step: 0, m: params.map((p) => new Float32Array(p.size)), v: params.map((p) => new Float32Array(p.size)) };
  }

  get stepCount(): number {
    return this.state.step;
  }

  /** One update from the accumulated .grad of each parameter (parameters without grad are skipped). */
  step(): void {
    const s = this.state;
    s.step++;
    const { beta1: b1, beta2: b2, eps, lr } = this;
    const bc1 = 1 - Math.pow(b1, s.step);
    const bc2 = 1 - Math.pow(b2, s.step);
    const c1 = 1 - b1;
    const c2 = 1 - b2;
    const params = this.params;
    for (let i = 0; i < params.length; i++) {
      const p = params[i];
      if (p instanceof RowSparseParameter && p.rowGrad) {
        this.lazyRows(p, s.m[i], s.v[i], bc1, bc2);
        continue;
      }
      const g = p.grad;
      if (!g) continue;
      const m = s.m[i];
      const v = s.v[i];
      const w = p.data;
      const decay = this.noDecay.has(p) ? 0 : lr * this.weightDecay;
      // one pass; the moments are rounded to float32 (fround) before use, exactly as when they
      // were read back from m and v, so the update is unchanged
      for (let j = 0; j < w.length; j++) {
        const gj = g[j];
        const mj = Math.fround(b1 * m[j] + c1 * gj);
        const vj = Math.fround(b2 * v[j] + c2 * gj * gj);
        m[j] = mj;
        v[j] = vj;
        const wj = w[j];
        w[j] = wj - (decay * wj + (lr * (mj / bc1)) / (Math.sqrt(vj / bc2) + eps));
      }
    }
  }

  /**
   * AdamW on the touched rows of a row-sparse parameter only (lazy Adam, as TensorFlow's LazyAdam
   * and PyTorch's SparseAdam): untouched rows keep their weights and moments, and weight decay
   * reaches a row only in the steps that touch it. O(touched rows), not O(rows).
   */
  private lazyRows(p: RowSparseParameter, m: Float32Array, v: Float32Array, bc1: number, bc2: number): void {
    const { beta1: b1, beta2: b2, eps, lr } = this;
    const c1 = 1 - b1;
    const c2 = 1 - b2;
    const w = p.data;
    const width = p.width;
    const { rows, values } = p.rowGrad!;
    const decay = this.noDecay.has(p) ? 0 : lr * this.weightDecay;
    for (let r = 0; r < rows.length; r++) {
      const o = rows[r] * width;
      const go = r * width;
      for (let c = 0; c < width; c++) {
        const j = o + c;
        const gj = values[go + c];
        const mj = Math.fround(b1 * m[j] + c1 * gj);
        const vj = Math.fround(b2 * v[j] + c2 * gj * gj);
        m[j] = mj;
        v[j] = vj;
        const wj = w[j];
        w[j] = wj - (decay * wj + (lr * (mj / bc1)) / (Math.sqrt(vj / bc2) + eps));
      }
    }
  }

  zeroGrad(): void {
    for (const p of this.params) {
      p.grad = null;
      if (p instanceof RowSparseParameter) p.rowGrad = null;
    }
  }

  getState(): AdamWState {
    return this.state;
  }

  setState(state: AdamWState): void {
    if (state.m.length !== this.params.length || state.v.length !== this.params.length) {
      throw new Error(`AdamW.setState: state has ${state.m.length} moment tensors, optimizer has ${this.params.length} parameters`);
    }
    state.m.forEach((m, i) => {
      if (m.length !== this.params[i].size || state.v[i].length !== this.params[i].size) {
        throw new Error(`AdamW.setState: moment ${i} has ${m.length} elements, parameter has ${this.params[i].size}`);
      }
    });
    this.state = state;
  }
}

/** Scale gradients so their global L2 norm is at most maxNorm; returns the norm before clipping. */
export function clipGradNorm(params: Parameter[], maxNorm: number): number {
  // row-sparse parameters contribute their touched rows (the others' gradient is zero)
  const grads = (p: Parameter): Float32Array[] => [...(p.grad ? [p.grad] : []), ...(p instanceof RowSparseParameter && p.rowGrad ? [p.rowGrad.values] : [])];
  let ss = 0;
  for (const p of params) for (const g of grads(p)) for (let i = 0; i < g.length; i++) ss += g[i] * g[i];
  const norm = Math.sqrt(ss);
  if (maxNorm > 0 && norm > maxNorm) {
    const f = maxNorm / (norm + 1e-6);
    for (const p of params) for (const g of grads(p)) for (let i = 0; i < g.length; i++) g[i] *= f;
  }
  return norm;
}

/** Linear warmup from 0 to `lr` over `warmup` steps, then cosine decay to `minLr` at `total`. */
export function cosineWithWarmup(step: number, opts: { lr: number; warmup: number; total: number; minLr?: number }): number {
  const { lr, warmup, total } = opts;
  const minLr = opts.minLr ?? lr * 0.1;
  if (step < warmup) return (lr * (step + 1)) / warmup;
  if (step >= total) return minLr;
  const t = (step - warmup) / Math.max(1, total - warmup);
  return minLr + 0.5 * (lr - minLr) * (1 + Math.cos(Math.PI * t));
}

/** Linear warmup then linear decay to `minLr` at `total`. */
export function linearWithWarmup(step: number, opts: { lr: number; warmup: number; total: number; minLr?: number }): number {
  const { lr, warmup, total } = opts;
  const minLr = opts.minLr ?? 0;
  if (step < warmup) return (lr * (step + 1)) / warmup;
  if (step >= total) return minLr;
  const t = (step - warmup) / Math.max(1, total - warmup);
  return lr + (minLr - lr) * t;
}
