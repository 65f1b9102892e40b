/**
 * Memory a model (and a training step) would need, estimated from the config before anything is
 * allocated, so `hidden_size: 65536` or `batch_size: 1e9` fail with one line naming the field and
 * the bytes instead of "Invalid typed array length" or an out-of-memory crash. The estimate is a
 * lower bound (float32 parameters, gradients and AdamW moments, the largest activations of one
 * step); it only has to be right to within a small factor to catch impossible configs.
 */
import type { ModelConfig, RunConfig, TrainConfig } from './config.js';
import { isMoELayer, ConfigError } from './config.js';
import { attentionRegistry, attentionKindOf } from './attention/registry.js';

export class MemoryLimitError extends ConfigError {}

// The library root runs in browsers too, so Node's modules are looked up at run time, not imported.
type NodeProcess = { getBuiltinModule?: (id: string) => unknown; constrainedMemory?: () => number };
const nodeProcess = (globalThis as { process?: NodeProcess }).process;
const nodeOs = nodeProcess?.getBuiltinModule?.('node:os') as { totalmem(): number } | undefined;
const nodeBuffer = nodeProcess?.getBuiltinModule?.('node:buffer') as { constants: { MAX_LENGTH: number } } | undefined;

/** Typed arrays longer than this cannot be created (float32 elements). */
export const MAX_TENSOR_ELEMENTS = Math.floor((nodeBuffer?.constants.MAX_LENGTH ?? 2 ** 32) / 4);

/** Bytes this process may use: total memory, or the cgroup limit when lower (browsers: navigator.deviceMemory, else 4 GiB). */
export function availableMemoryBytes(): number {
  const deviceGiB = (globalThis as { navigator?: { deviceMemory?: number } }).navigator?.deviceMemory;
  const total = nodeOs ? nodeOs.totalmem() : (deviceGiB ?? 4) * 2 ** 30;
  const constrained = typeof nodeProcess?.constrainedMemory === 'function' ? nodeProcess.constrainedMemory() : 0;
  return constrained && constrained > 0 && constrained < total ? constrained : total;
}

export interface MemoryEstimate {
  parameters: number;
  /** Elements of the largest single tensor (parameter or activation). */
  largestTensor: number;
  /** Bytes: parameters only (inference). */
  inferenceBytes: number;
  /** Bytes: parameters, gradients, AdamW moments and one step's activations. */
  trainingBytes: number;
}

/** JS objects per parameter tensor (module, Parameter, typed array headers): a rough constant. */
const OBJECT_OVERHEAD_BYTES = 1024;

function ffnParams(d: number, f: number, act: ModelConfig['hidden_act']): number {
  return (act === 'silu' ? 3 : 2) * d * f;
}

/** Parameter count and tensor count of the model a config describes. */
export function countParameters(c: ModelConfig): { params: number; tensors: number; largest: number } {
  const d = c.hidden_size;
  const V = c.vocab_size;
  let params = V * d + d; // embedding, final norm
  let tensors = 2;
  let largest = V * d;
  if (!c.tie_word_embeddings) {
    params += V * d;
    tensors++;
  }
  const attn = attentionRegistry.find(attentionKindOf(c))?.parameters;
  for (let i = 0; i < c.num_hidden_layers; i++) {
    params += attn ? attn(c) : 4 * d * d + 2 * d;
    tensors += 6;
    largest = Math.max(largest, d * d);
    if (isMoELayer(c, i)) {
      const sizes = c.expert_sizes ?? [c.moe_intermediate_size];
      const perExpert = c.expert_sizes ? sizes.reduce((a, f) => a + ffnParams(d, f, c.hidden_act), 0) : c.num_local_experts * ffnParams(d, c.moe_intermediate_size, c.hidden_act);
      params += d * c.num_local_experts + perExpert + (c.moe_output_bias ? d : 0);
      tensors += 1 + 3 * c.num_local_experts;
      const maxF = Math.max(...sizes);
      // grouped experts may be stored as one [E, f, d] tensor
      largest = Math.max(largest, c.num_local_experts * maxF * d);
      if (c.n_shared_experts > 0) {
        const fs = c.shared_expert_intermediate_size ?? c.moe_intermediate_size;
        params += c.n_shared_experts * ffnParams(d, fs, c.hidden_act);
        tensors += 3 * c.n_shared_experts;
      }
      if (c.conditional_moe_routing) {
        params += ffnParams(d, c.intermediate_size, c.hidden_act) + d + 1;
        tensors += 5;
      }
    } else {
      params += ffnParams(d, c.intermediate_size, c.hidden_act);
      tensors += 3;
      largest = Math.max(largest, d * c.intermediate_size);
    }
  }
  return { params, tensors, largest };
}

/** Activation floats of one training step (kept for backward), per layer and for the logits. */
function activationElements(c: ModelConfig, t: Pick<TrainConfig, 'batch_size' | 'seq_len'>): { total: number; largest: number } {
  const N = t.batch_size * t.seq_len;
  const d = c.hidden_size;
  let perToken = 0;
  let largest = N * c.vocab_size;
  for (let i = 0; i < c.num_hidden_layers; i++) {
    // norms, q/k/v/o, residual adds: about 10 d-wide tensors per token
    perToken += 10 * d + c.num_attention_heads * t.seq_len;
    if (isMoELayer(c, i)) {
      const f = c.expert_sizes ? Math.max(...c.expert_sizes) : c.moe_intermediate_size;
      perToken += c.num_experts_per_tok * (3 * f + d) + c.num_local_experts;
      largest = Math.max(largest, N * c.num_experts_per_tok * f);
    } else {
      perToken += 3 * c.intermediate_size;
      largest = Math.max(largest, N * c.intermediate_size);
    }
  }
  largest = Math.max(largest, t.batch_size * c.num_attention_heads * t.seq_len * t.seq_len);
  // logits, their softmax and gradient
  return { total: N * perToken + 3 * N * c.vocab_size, largest };
}

export function estimateMemory(c: ModelConfig, t?: Pick<TrainConfig, 'batch_size' | 'seq_len'>): MemoryEstimate {
  const p = countParameters(c);
  const overhead = p.tensors * OBJECT_OVERHEAD_BYTES;
  const act = t ? activationElements(c, t) : { total: 0, largest: 0 };
  return {
    parameters: p.params,
    largestTensor: Math.max(p.largest, act.largest),
    inferenceBytes: 4 * p.params + overhead,
    // weights + gradients + two AdamW moments, plus activations
    trainingBytes: 16 * p.params + overhead + 4 * act.total,
  };
}

function formatBytes(n: number): string {
  if (n >= 1e12) return `${(n / 1e12).toFixed(1)} TB`;
  if (n >= 1e9) return `${(n / 1e9).toFixed(1)} GB`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)} MB`;
  return `${Math.round(n / 1e3)} kB`;
}

/** Size fields that can blow memory up, with the small value used to find the one responsible. */
const MODEL_FIELDS: [keyof ModelConfig, number][] = [
  ['hidden_size', 128],
  ['num_hidden_layers', 1],
  ['num_local_experts', 1],
  ['moe_intermediate_size', 256],
  ['intermediate_size', 512],
  ['vocab_size', 256],
  ['n_shared_experts', 0],
  ['shared_expert_intermediate_size', 256],
  ['num_attention_heads', 1],
];
const TRAIN_FIELDS: ['batch_size' | 'seq_len', number][] = [
  ['batch_size', 16],
  ['seq_len', 128],
];

/** The field whose reduction to a small value shrinks `measure` the most. */
function culprit(c: ModelConfig, t: Pick<TrainConfig, 'batch_size' | 'seq_len'> | undefined, measure: (c: ModelConfig, t?: Pick<TrainConfig, 'batch_size' | 'seq_len'>) => number): string {
  const base = measure(c, t);
  let best = '';
  let bestValue = base;
  const consider = (name: string, v: number): void => {
    if (v < bestValue) {
      bestValue = v;
      best = name;
    }
  };
  for (const [f, small] of MODEL_FIELDS) {
    const cur = c[f];
    if (typeof cur !== 'number' || cur <= small) continue;
    let alt = { ...c, [f]: small } as ModelConfig;
    if (f === 'num_local_experts') alt = { ...alt, num_experts_per_tok: 1, expert_sizes: c.expert_sizes?.slice(0, 1) };
    if (f === 'num_attention_heads' || f === 'hidden_size') alt = { ...alt, num_attention_heads: 1 };
    consider(`model.${f} = ${cur}`, measure(alt, t));
  }
  if (c.expert_sizes) consider(`model.expert_sizes (max ${Math.max(...c.expert_sizes)})`, measure({ ...c, expert_sizes: c.expert_sizes.map(() => 1) }, t));
  if (t) {
    for (const [f, small] of TRAIN_FIELDS) {
      const cur = t[f];
      if (cur <= small) continue;
      consider(`training.${f} = ${cur}`, measure(c, { ...t, [f]: small }));
    }
  }
  return best || 'the model size';
}

/**
 * Throw MemoryLimitError naming the responsible field, the bytes needed and the bytes available
 * when the model (or, with `training`, a training step) cannot fit. `available` defaults to
 * availableMemoryBytes() (tests pass their own).
 */
export function checkMemory(c: ModelConfig, opts: { training?: Pick<TrainConfig, 'batch_size' | 'seq_len'>; available?: number } = {}): MemoryEstimate {
  const t = opts.training;
  const est = estimateMemory(c, t);
  const available = opts.available ?? availableMemoryBytes();
  if (est.largestTensor > MAX_TENSOR_ELEMENTS) {
    const field = culprit(c, t, (cc, tt) => estimateMemory(cc, tt).largestTensor);
    throw new MemoryLimitError(
      `${field}: one tensor would need ${est.largestTensor.toExponential(2)} elements (${4 * est.largestTensor} bytes), more than the ${MAX_TENSOR_ELEMENTS} elements (${4 * MAX_TENSOR_ELEMENTS} bytes) a typed array can hold`,
    );
  }
  const needed = t ? est.trainingBytes : est.inferenceBytes;
  if (needed > available) {
    const field = culprit(c, t, (cc, tt) => {
      const e = estimateMemory(cc, tt);
      return tt ? e.trainingBytes : e.inferenceBytes;
    });
    throw new MemoryLimitError(
      `${field}: ${t ? 'training' : 'the model'} would need about ${formatBytes(needed)} (${needed} bytes; ${est.parameters.toExponential(2)} parameters), but only ${formatBytes(available)} (${available} bytes) of memory is available`,
    );
  }
  return est;
}

/** checkMemory for a whole run config (model + training step). */
export function checkRunMemory(cfg: RunConfig, available?: number): MemoryEstimate {
  return checkMemory(cfg.model, { training: cfg.training, available });
}
