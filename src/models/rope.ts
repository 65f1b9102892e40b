/**
 * RoPE frequency variants as Hugging Face transformers computes them
 * (modeling_rope_utils: default, linear, llama3, yarn). Others fail naming the type.
 * Papers: Su et al., "RoFormer", 2021; Chen et al., "Extending Context Window of Large Language
 * Models via Positional Interpolation", 2023 (linear); Peng et al., "YaRN", 2023.
 */
import { ConfigError, type ModelConfig } from './config.js';

export const ROPE_TYPES = ['default', 'linear', 'llama3', 'yarn'] as const;

export interface RopeParams {
  theta: number;
  /** head_dim / 2 inverse frequencies. */
  invFreq: Float32Array;
  /** Multiplies cos and sin (YaRN's attention factor); 1 otherwise. */
  scale: number;
}

function num(rs: Record<string, unknown>, k: string, def?: number): number {
  const v = rs[k] ?? def;
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new ConfigError(`rope_scaling.${k} must be a finite number, got ${JSON.stringify(rs[k])}`);
  return v;
}

export function ropeParams(c: ModelConfig, headDim: number): RopeParams {
  const base = c.rope_theta;
  const half = headDim / 2;
  // float32 like transformers' torch.arange(0, dim, 2).float() / dim
  const inv = new Float32Array(half);
  for (let i = 0; i < half; i++) inv[i] = 1 / Math.pow(base, Math.fround((2 * i) / headDim));
  const rs = c.rope_scaling as Record<string, unknown> | undefined;
  const type = (rs?.rope_type ?? rs?.type ?? 'default') as string;
  if (!rs || type === 'default') return { theta: base, invFreq: inv, scale: 1 };
  const factor = num(rs, 'factor');
  if (type === 'linear') return { theta: base, invFreq: inv.map((f) => f / factor), scale: 1 };
  if (type === 'llama3') {
    const lo = num(rs, 'low_freq_factor');
    const hi = num(rs, 'high_freq_factor');
    const old = num(rs, 'original_max_position_embeddings');
    const loWave = old / lo;
    const hiWave = old / hi;
    const out = new Float32Array(half);
    for (let i = 0; i < half; i++) {
      const f = inv[i];
      const wave = (2 * Math.PI) / f;
      if (wave < hiWave) out[i] = f;
      else if (wave > loWave) out[i] = f / factor;
      else {
        const s = (old / wave - lo) / (hi - lo);
        out[i] = (1 - s) * (f / factor) + s * f;
      }
    }
    return { theta: base, invFreq: out, scale: 1 };
  }
  if (type === 'yarn') {
    const omp = num(rs, 'original_max_position_embeddings', c.max_position_embeddings);
    const betaFast = num(rs, 'beta_fast', 32);
    const betaSlow = num(rs, 'beta_slow', 1);
    const mscaleOf = (s: number, m = 1): number => (s <= 1 ? 1 : 0.1 * m * Math.log(s) + 1);
    let attn = rs.attention_factor as number | undefined;
    if (attn === undefined || attn === null) {
      const m = rs.mscale as number | undefined;
      const mAll = rs.mscale_all_dim as number | undefined;
      attn = m && mAll ? mscaleOf(factor, m) / mscaleOf(factor, mAll) : mscaleOf(factor);
    }
    const corrDim = (rot: number): number => (headDim * Math.log(omp / (rot * 2 * Math.PI))) / (2 * Math.log(base));
    const truncate = rs.truncate !== false;
    let low = corrDim(betaFast);
    let high = corrDim(betaSlow);
    if (truncate) {
      low = Math.floor(low);
      high = Math.ceil(high);
    }
    low = Math.max(low, 0);
    high = Math.min(high, headDim - 1);
    if (low === high) high += 0.001;
    const out = new Float32Array(half);
    for (let i = 0; i < half; i++) {
      const ramp = Math.min(1, Math.max(0, (i - low) / (high - low)));
      const extra = 1 - ramp; // extrapolation weight
      out[i] = (inv[i] / factor) * (1 - extra) + inv[i] * extra;
    }
    return { theta: base, invFreq: out, scale: attn };
  }
  throw new ConfigError(`rope_scaling.rope_type "${type}" is not supported (supported: ${ROPE_TYPES.join(', ')})`);
}
