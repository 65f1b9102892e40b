/**
 * Multi-head latent attention (DeepSeek-AI, "DeepSeek-V2", 2024; also DeepSeek-V3), computed
 * naively (keys and values expanded per head, as transformers' eager path does):
 *   q = q_proj(x) or q_b_proj(RMSNorm(q_a_proj(x)))            [T, H * (nope + rope)]
 *   [c, k_rot] = kv_a_proj_with_mqa(x)                          [T, kv_lora_rank + rope]
 *   [k_nope, v] = kv_b_proj(RMSNorm(c))                         [T, H * (nope + v_head_dim)]
 *   key = [k_nope, RoPE(k_rot) shared by all heads], query = [q_nope, RoPE(q_rot)]
 * Scores are scaled by (nope + rope)^-0.5, times mscale^2 under YaRN with mscale_all_dim.
 * RoPE rotates pairs (i, i + rope/2); checkpoints whose RoPE is interleaved (pairs 2i, 2i+1, as
 * DeepSeek's) are permuted on load so the two agree (io/hf).
 */
import { Tensor } from '../tensor/tensor.js';
import { Rng } from '../tensor/random.js';
import * as T from '../tensor/index.js';
import { Module, Linear, RMSNorm } from '../nn/index.js';
import type { ModelConfig } from './config.js';
import { ropeParams, type RopeParams } from './rope.js';

/** [B, 1 or KV, T, D] -> [B, H, T, D], each source head serving H / KV heads. */
export function repeatHeads(x: Tensor, H: number): Tensor {
  const [B, KV, Tk, Dh] = x.shape;
  const n = H / KV;
  if (n === 1) return x;
  const idx = new Int32Array(B * H * Tk);
  let p = 0;
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const src = (b * KV + Math.floor(h / n)) * Tk;
      for (let t = 0; t < Tk; t++) idx[p++] = src + t;
    }
  }
  return T.reshape(T.gatherRows(T.reshape(x, [B * KV * Tk, Dh]), idx), [B, H, Tk, Dh]);
}

export class MLAttention extends Module {
  q_proj: Linear | null = null;
  q_a_proj: Linear | null = null;
  q_a_layernorm: RMSNorm | null = null;
  q_b_proj: Linear | null = null;
  kv_a_proj_with_mqa: Linear;
  kv_a_layernorm: RMSNorm;
  kv_b_proj: Linear;
  o_proj: Linear;
  readonly heads: number;
  readonly nope: number;
  readonly rope: number;
  readonly vDim: number;
  readonly rank: number;
  private readonly ropeP: RopeParams | null;
  /** Extra query scale (YaRN mscale^2 with mscale_all_dim), 1 otherwise. */
  private readonly qScale: number;

  constructor(
    readonly cfg: ModelConfig,
    rng: Rng,
  ) {
    super();
    const d = cfg.hidden_size;
    const H = (this.heads = cfg.num_attention_heads);
    this.nope = cfg.qk_nope_head_dim!;
    this.rope = cfg.qk_rope_head_dim!;
    this.vDim = cfg.v_head_dim!;
    this.rank = cfg.kv_lora_rank!;
    const qk = this.nope + this.rope;
    const std = cfg.initializer_range;
    const bias = cfg.attention_bias;
    if (cfg.q_lora_rank) {
      this.q_a_proj = new Linear(d, cfg.q_lora_rank, rng, { std, bias });
      this.q_a_layernorm = new RMSNorm(cfg.q_lora_rank, cfg.rms_norm_eps);
      this.q_b_proj = new Linear(cfg.q_lora_rank, H * qk, rng, { std });
    } else this.q_proj = new Linear(d, H * qk, rng, { std });
    this.kv_a_proj_with_mqa = new Linear(d, this.rank + this.rope, rng, { std, bias });
    this.kv_a_layernorm = new RMSNorm(this.rank, cfg.rms_norm_eps);
    this.kv_b_proj = new Linear(this.rank, H * (this.nope + this.vDim), rng, { std });
    this.o_proj = new Linear(H * this.vDim, d, rng, { std: std / Math.sqrt(2 * cfg.num_hidden_layers), bias });
    this.ropeP = ropeParams(cfg, this.rope);
    const rs = cfg.rope_scaling as Record<string, unknown> | undefined;
    const mAll = typeof rs?.mscale_all_dim === 'number' ? rs.mscale_all_dim : 0;
    const f = typeof rs?.factor === 'number' ? rs.factor : 1;
    const m = mAll && f > 1 ? 0.1 * mAll * Math.log(f) + 1 : 1;
    this.qScale = m * m;
  }

  /** [N, H * w] with per-head [a | b] columns -> the [B, H, T, .] heads of the a part or the b part. */
  private part(x: Tensor, B: number, Tn: number, w: number, start: number, end: number, rope?: { offset: number; theta: number; invFreq?: Float32Array; scale?: number }): Tensor {
    const N = B * Tn;
    const H = this.heads;
    const s = T.slice(T.reshape(x, [N * H, w]), 1, start, end);
    return T.splitHeads(T.reshape(s, [N, H * (end - start)]), B, Tn, H, rope);
  }

  forward(x: Tensor, B: number, Tn: number, cache?: { k: Tensor | undefined; v: Tensor | undefined; offset: number }): { y: Tensor; k: Tensor; v: Tensor } {
    const H = this.heads;
    const qk = this.nope + this.rope;
    const rope = { offset: cache?.offset ?? 0, theta: this.cfg.rope_theta, ...(this.ropeP ? { invFreq: this.ropeP.invFreq, scale: this.ropeP.scale } : {}) };
    const qx = this.q_proj ? this.q_proj.forward(x) : this.q_b_proj!.forward(this.q_a_layernorm!.forward(this.q_a_proj!.forward(x)));
    let q = T.concat([this.part(qx, B, Tn, qk, 0, this.nope), this.part(qx, B, Tn, qk, this.nope, qk, rope)], 3);
    if (this.qScale !== 1) q = T.scale(q, this.qScale);
    const ckv = this.kv_a_proj_with_mqa.forward(x);
    const latent = T.slice(ckv, 1, 0, this.rank);
    const kRot = T.splitHeads(T.slice(ckv, 1, this.rank, this.rank + this.rope), B, Tn, 1, rope);
    const kv = this.kv_b_proj.forward(this.kv_a_layernorm.forward(latent));
    const w = this.nope + this.vDim;
    let k = T.concat([this.part(kv, B, Tn, w, 0, this.nope), repeatHeads(kRot, H)], 3);
    let v = this.part(kv, B, Tn, w, this.nope, w);
    // causalAttention wants equal key and value widths: pad values with zeros, cut the output
    if (this.vDim < qk) v = T.concat([v, new Tensor(new Float32Array(B * H * Tn * (qk - this.vDim)), [B, H, Tn, qk - this.vDim])], 3);
    if (cache?.k && cache.v) {
      k = T.concat([cache.k, k], 2);
      v = T.concat([cache.v, v], 2);
    }
    let o = T.causalAttention(q, k, v);
    if (this.vDim < qk) o = T.slice(o, 3, 0, this.vDim);
    return { y: this.o_proj.forward(T.mergeHeads(o)), k, v };
  }
}
