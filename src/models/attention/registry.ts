/**
 * The attention-kind registry: each kind of self-attention (standard multi-head, MLA, the
 * attention-expert designs) registers one spec with its factory and a strict zod schema of its
 * options. A model config picks one with `attention_type` and `attention_options`; the decoder
 * layer builds whatever the registry returns and never matches on a name.
 */
import type { Tensor } from '../../tensor/tensor.js';
import type { Rng } from '../../tensor/random.js';
import { z, formatIssues, pathString, ConfigError } from '../../tensor/validate.js';
import type { Module } from '../../nn/module.js';
import { Registry, type EntrySpec } from '../../moe/registry.js';
import type { RouterContext, RouterOutput } from '../../moe/types.js';
import type { ModelConfig } from '../config.js';

/** The cached keys/values of earlier positions a layer reuses in incremental decoding. */
export interface AttentionCacheEntry {
  k: Tensor | undefined;
  v: Tensor | undefined;
  /** Tokens already in the cache (the RoPE offset of the new ones). */
  offset: number;
  /**
   * Absolute positions of the new rows ([B*T]) when they are not offset + t: rows gathered from
   * longer sequences (Mixture-of-Depths blocks). Only the standard kind reads it.
   */
  positions?: Int32Array;
}

/** An attention layer's output: y [B*T, d], the keys/values to cache, and any auxiliary losses (already scaled). */
export interface AttentionResult {
  y: Tensor;
  k: Tensor;
  v: Tensor;
  losses?: Record<string, Tensor>;
  /**
   * The head router's output, for kinds whose router joins the model's all-layers Switch loss
   * (aux_loss_normalization 'all-layers-tokens', JetMoE) instead of a loss of its own.
   */
  router?: RouterOutput;
}

/**
 * What every attention kind implements: x [B*T, d] -> y [B*T, d]. `valueInput` (kinds whose spec
 * sets `periNorm`): the un-normalised rows the value path reads while queries, keys and routers
 * read x (MoEUT's peri-layernorm).
 */
export interface AttentionModule extends Module {
  forward(x: Tensor, B: number, Tn: number, cache?: AttentionCacheEntry, ctx?: RouterContext, valueInput?: Tensor): AttentionResult;
}

/** The zod shape of an attention kind's options. */
export type AttentionOptionShape = Record<string, z.ZodType>;
/** An attention kind's options after parsing (defaults applied). */
export type ParsedAttentionOptions<S extends AttentionOptionShape> = z.output<z.ZodObject<S>>;

/** One attention kind: factory, summary, paper and a strict options schema. */
export interface AttentionSpec<S extends AttentionOptionShape = AttentionOptionShape> extends EntrySpec {
  options: S;
  /** Rules across options or against the model config (hidden_size, heads). */
  refine?: (opts: ParsedAttentionOptions<S>, model: ModelConfig, issue: (field: string, message: string) => void) => void;
  create: (model: ModelConfig, opts: ParsedAttentionOptions<S>, rng: Rng, layerIndex: number) => AttentionModule;
  /** The kind reads `valueInput` (peri-layernorm: values from the un-normalised residual stream). */
  periNorm?: boolean;
  /** Parameters of one block, for the pre-allocation memory estimate (default: the 4 d^2 of multi-head attention). */
  parameters?: (model: ModelConfig) => number;
}

/** Register-time helper that keeps the options' types inside the spec. */
export function defineAttention<S extends AttentionOptionShape>(spec: AttentionSpec<S>): AttentionSpec {
  return spec as unknown as AttentionSpec;
}

/** Attention kinds by name. */
export const attentionRegistry = new Registry<AttentionSpec>('attention kind');

/** The kind a model config selects: attention_type, else MLA when kv_lora_rank is set, else standard. */
export function attentionKindOf(c: ModelConfig): string {
  return c.attention_type ?? (c.kv_lora_rank !== undefined ? 'mla' : 'standard');
}

/** Validate attention_options against the kind's schema (house error format, naming model.attention_options.<field>). */
export function parseAttentionOptions(c: ModelConfig): { spec: AttentionSpec; opts: ParsedAttentionOptions<AttentionOptionShape> } {
  const kind = attentionKindOf(c);
  if (!attentionRegistry.has(kind)) throw new ConfigError(`model config: attention_type must be one of ${attentionRegistry.names().join(', ')}, got ${JSON.stringify(kind)}`);
  const spec = attentionRegistry.spec(kind);
  const schema = z
    .object(spec.options)
    .strict()
    .superRefine((o, ctx) => spec.refine?.(o, c, (field, message) => ctx.addIssue({ code: 'custom', path: [field], message })));
  const value = c.attention_options ?? {};
  const r = schema.safeParse(value);
  if (!r.success) {
    throw new ConfigError(
      formatIssues(r.error.issues, value, {
        where: `model config: attention "${kind}"`,
        label: (p) => `attention_options${p.length ? '.' + pathString(p) : ''}`,
        known: (p) => (p.length ? undefined : Object.keys(spec.options)),
      }),
    );
  }
  return { spec, opts: r.data as ParsedAttentionOptions<AttentionOptionShape> };
}

/** Build layer `layerIndex`'s attention from the model config. */
export function buildAttention(c: ModelConfig, rng: Rng, layerIndex: number): AttentionModule {
  const { spec, opts } = parseAttentionOptions(c);
  return spec.create(c, opts, rng, layerIndex);
}

/** Fail with one line when the model config sets attention features a kind does not implement. */
export function rejectUnsupported(kind: string, c: ModelConfig): void {
  const set: string[] = [];
  if (c.qk_norm !== 'none') set.push('qk_norm');
  if (c.sliding_window !== undefined) set.push('sliding_window');
  if (c.attention_sinks) set.push('attention_sinks');
  if (c.kv_lora_rank !== undefined) set.push('kv_lora_rank');
  if (c.attention_multiplier !== undefined) set.push('attention_multiplier');
  if (set.length) throw new ConfigError(`model config: attention_type "${kind}" does not support ${set.join(', ')}; unset ${set.length > 1 ? 'them' : 'it'} or use attention_type "standard"`);
}
