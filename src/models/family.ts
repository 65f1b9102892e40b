/**
 * The model-family registry: `model_type` in a model config names a host architecture (the MoE
 * transformer 'moe-ts', 'mamba-moe', 'all-mlp', ...) registered here with its builder, a strict zod
 * schema of its own options (`family_options`), the shared config fields it does not use, and
 * traits saying which features outside the model it supports (the fast decode engine, GGUF and
 * Hugging Face export, adaptation). Training, generation, evaluation and the router benchmark
 * build models through `buildModel` (src/models/build.ts) and never match on a family's name.
 */
import type { Rng } from '../tensor/random.js';
import type { Module } from '../nn/module.js';
import { z, formatIssues, pathString, ConfigError } from '../tensor/validate.js';
import { Registry, type EntrySpec } from '../moe/registry.js';
import type { MoELayer } from '../moe/layer.js';
import type { RouterContext } from '../moe/types.js';
import type { MoEAux } from '../moe/types.js';
import type { Tensor } from '../tensor/tensor.js';
import type { ModelConfig } from './config.js';

/** The family a config without model_type gets (every checkpoint written before families existed). */
export const DEFAULT_MODEL_TYPE = 'moe-ts';

/** Incremental-decoding state a family keeps between forward calls; `length` counts the tokens already seen. */
export interface ModelCache {
  length: number;
}

/** What a language model's forward takes besides the token ids. */
export interface LMForwardOptions {
  ctx: Omit<RouterContext, 'tokenIds'>;
  /** The family's own cache (from emptyCache), extended in place. */
  cache?: ModelCache;
  /** Dropout randomness (training only). */
  dropoutRng?: Rng;
}

/** A forward pass's logits and routing records. */
export interface LMForwardResult {
  /** [B*T, vocab]. */
  logits: Tensor;
  /** One record per MoE layer, in layer order; `layer` is the host layer's index. */
  aux: { layer: number; aux: MoEAux }[];
  /** Losses over all layers at once (already scaled). */
  losses: Record<string, Tensor>;
}

/** What every model family builds: a causal LM over token ids whose MoE layers the trainer and evaluator see. */
export interface LanguageModel extends Module {
  readonly config: ModelConfig;
  /** ids [B, T] (row-major) -> logits [B*T, V]; with a cache, only the new tokens are given. */
  forward(ids: Int32Array, B: number, Tn: number, opts: LMForwardOptions): LMForwardResult;
  /** A fresh incremental-decoding state. */
  emptyCache(): ModelCache;
  moeLayers(): MoELayer[];
  /** The host-layer index of each MoE layer, in the order of moeLayers() (the `layer` of its aux record). */
  moeLayerIndices(): number[];
  /** The largest two-pass consistency coefficient any router asks for (0: one pass per step). */
  consistencyWeight(): number;
  /** Let adaptive routers update after an optimizer step. */
  afterStep(): void;
  /** Parameters that a token actually uses, for FLOP-matched comparisons. */
  activeParameters(): number;
  /** Zero the gradients a step-scheduled module (MAE's alternating blocks) does not train at `step`. */
  dropScheduledGradients?(step: number): void;
  /** Mixture-of-Depths capacity per layer (1: every token runs the block). */
  readonly depthCaps?: readonly number[];
}

/** Features outside the model that a family supports; a command needing a missing one fails with one line. */
export interface FamilyTraits {
  /** The host has self-attention, so the config's attention fields (heads, RoPE, ...) are validated and used. */
  attention: boolean;
  /** The compiled fast decode engine (generate --quant, the decode benchmark). */
  decodeEngine: boolean;
  /** GGUF export/import (convert --to gguf, quantize). */
  gguf: boolean;
  /** Hugging Face model directory export (convert --to hf). */
  hfExport: boolean;
  /** upcycle, prune, train --peft, merge. */
  adapt: boolean;
  /** How generation reuses work between tokens, for the docs and `moe-ts generate`'s notes. */
  cache: 'kv' | 'recurrent' | 'recompute';
}

/** The zod shape of a family's own options. */
export type FamilyOptionShape = Record<string, z.ZodType>;
/** A family's options after parsing (defaults applied). */
export type ParsedFamilyOptions<S extends FamilyOptionShape> = z.output<z.ZodObject<S>>;

/** One model family: builder, summary, papers, options schema, traits. */
export interface FamilySpec<S extends FamilyOptionShape = FamilyOptionShape> extends EntrySpec {
  options: S;
  traits: FamilyTraits;
  /** Shared model-config fields this family ignores: setting one is an error naming it. */
  unusedFields?: readonly string[];
  /** Rules across the family's options and the model config. */
  refine?: (opts: ParsedFamilyOptions<S>, model: ModelConfig, issue: (field: string, message: string) => void) => void;
  /**
   * What the family adds to the transformer-shaped memory estimate (src/models/memory.ts), in float32
   * elements: parameters, one training step's activations (with `training`), and its largest tensor.
   */
  memory?: (model: ModelConfig, training?: { batch_size: number; seq_len: number }) => { params: number; activations: number; largest: number };
  /** Build the model with its parameters initialised from `seed`. */
  create: (model: ModelConfig, opts: ParsedFamilyOptions<S>, seed: number) => LanguageModel;
}

/** Register-time helper that keeps the options' types inside the spec. */
export function defineFamily<S extends FamilyOptionShape>(spec: FamilySpec<S>): FamilySpec {
  return spec as unknown as FamilySpec;
}

/** Model families by model_type. */
export const familyRegistry = new Registry<FamilySpec>('model_type');

/** The family spec of a config; one line listing the registered names when it is unknown. */
export function familyOf(c: Pick<ModelConfig, 'model_type'>): FamilySpec {
  const f = familyRegistry.find(c.model_type);
  if (!f) throw new ConfigError(`model config: model_type must be one of ${familyRegistry.names().join(', ')}, got ${JSON.stringify(c.model_type)}`);
  return f;
}

/** Problems with a config's family_options (and family rules), as [path, message] pairs for the config's own refinement. */
export function familyOptionIssues(spec: FamilySpec, c: ModelConfig): z.core.$ZodIssue[] {
  const r = familySchema(spec, c).safeParse(c.family_options ?? {});
  if (r.success) return [];
  // the issues as zod made them (unknown keys keep their code), under family_options
  return r.error.issues.map((i) => ({ ...i, path: ['family_options', ...i.path] }));
}

function familySchema(spec: FamilySpec, c: ModelConfig): z.ZodType {
  return z
    .object(spec.options)
    .strict()
    .superRefine((o, ctx) => spec.refine?.(o as ParsedFamilyOptions<FamilyOptionShape>, c, (field, message) => ctx.addIssue({ code: 'custom', path: [field], message })));
}

/** Validate family_options against the family's schema (house error format, naming model.family_options.<field>). */
export function parseFamilyOptions(c: ModelConfig): { spec: FamilySpec; opts: ParsedFamilyOptions<FamilyOptionShape> } {
  const spec = familyOf(c);
  const value = c.family_options ?? {};
  const r = familySchema(spec, c).safeParse(value);
  if (!r.success) {
    throw new ConfigError(
      formatIssues(r.error.issues, value, {
        where: `model config: model_type "${spec.name}"`,
        label: (p) => `family_options${p.length ? '.' + pathString(p) : ''}`,
        known: (p) => (p.length ? undefined : Object.keys(spec.options)),
      }),
    );
  }
  return { spec, opts: r.data as ParsedFamilyOptions<FamilyOptionShape> };
}

/** Build the model a config describes, in its family (model_type), initialised from `seed`. */
export function buildModelOfFamily(c: ModelConfig, seed: number): LanguageModel {
  const { spec, opts } = parseFamilyOptions(c);
  return spec.create(c, opts, seed);
}

/** The one-line error for a feature a family lacks: `convert --to gguf: model_type "mamba-moe" does not support GGUF (supported by: moe-ts)`. */
export function unsupportedFeature(c: Pick<ModelConfig, 'model_type'>, trait: Exclude<keyof FamilyTraits, 'cache'>, what: string): ConfigError {
  const label: Record<typeof trait, string> = { attention: 'attention', decodeEngine: 'the fast decode engine', gguf: 'GGUF', hfExport: 'Hugging Face export', adapt: 'model adaptation' };
  const ok = familyRegistry
    .specs()
    .filter((s) => s.traits[trait])
    .map((s) => s.name);
  return new ConfigError(`${what}: model_type "${c.model_type}" does not support ${label[trait]} (supported by: ${ok.join(', ') || 'none'})`);
}
