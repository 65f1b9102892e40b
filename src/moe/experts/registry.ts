/**
 * The expert registry: each expert type registers one ExpertSpec (factory, summary, paper, a
 * strict zod schema of its options, traits). The MoE layer accepts any registered type.
 */
import type { Tensor } from '../../tensor/tensor.js';
import type { FusedSharedSwiglu } from '../../tensor/ops/moe_ops.js';
import type { Rng } from '../../tensor/random.js';
import { z, posInt, formatIssues, pathString, ConfigError } from '../../tensor/validate.js';
import type { Module } from '../../nn/module.js';
import { Registry, type EntrySpec } from '../registry.js';
import type { ExpertBank } from '../types.js';

/** An expert bank's config: the layer's dimensions plus the type's own options. */
export interface ExpertConfig {
  numExperts: number;
  dModel: number;
  [option: string]: unknown;
}

/** Dense experts every token goes through (DeepSeekMoE's shared experts), built by an expert type. */
export interface SharedExpertBank extends Module {
  forward(x: Tensor): Tensor;
  /** Multiply-adds per token. */
  flopsPerToken(): number;
  /** The float64 oracle of forward on one row (src/moe/reference.ts). */
  referenceForward(x: ArrayLike<number>): Float64Array;
  /** Weights that let the routed bank `experts` run these shared experts in its own fused op; null if it cannot. */
  fusedWith?(experts: unknown): FusedSharedSwiglu | null;
}

export type ExpertOptionShape = Record<string, z.ZodType>;
export type ParsedExpertConfig<S extends ExpertOptionShape> = { numExperts: number; dModel: number } & z.output<z.ZodObject<S>>;

export interface ExpertTraits {
  /** The Hugging Face `hidden_act` a model config selects this type with (silu -> SwiGLU experts). */
  hfHiddenAct?: string;
}

export interface ExpertSpec<S extends ExpertOptionShape = ExpertOptionShape> extends EntrySpec {
  options: S;
  /** Rules across options or against numExperts/dModel. */
  refine?: (cfg: ParsedExpertConfig<S>, issue: (field: string, message: string) => void) => void;
  traits: ExpertTraits;
  create: (cfg: ParsedExpertConfig<S>, rng: Rng) => ExpertBank;
  /** `count` shared experts of width dFF of this type (absent: the type has no shared form). */
  createShared?: (count: number, dModel: number, dFF: number, cfg: ParsedExpertConfig<S>, rng: Rng) => SharedExpertBank;
}

export function defineExperts<S extends ExpertOptionShape>(spec: ExpertSpec<S>): ExpertSpec {
  return spec as unknown as ExpertSpec;
}

export type ExpertFactory = (cfg: ExpertConfig, rng: Rng) => ExpertBank;

const schemas = new WeakMap<ExpertSpec, z.ZodType>();

/** The schema of { numExperts, dModel, ...options } (strict; `type` allowed and ignored). */
export function expertSchema(spec: ExpertSpec): z.ZodType {
  let s = schemas.get(spec);
  if (!s) {
    s = z
      .object({ type: z.string().optional(), numExperts: posInt(), dModel: posInt(), ...spec.options })
      .strict()
      .superRefine((c, ctx) => spec.refine?.(c as ParsedExpertConfig<ExpertOptionShape>, (field, message) => ctx.addIssue({ code: 'custom', path: [field], message })));
    schemas.set(spec, s);
  }
  return s;
}

export function parseExpertConfig(spec: ExpertSpec, cfg: ExpertConfig): ParsedExpertConfig<ExpertOptionShape> {
  const r = expertSchema(spec).safeParse(cfg);
  if (r.success) return r.data as ParsedExpertConfig<ExpertOptionShape>;
  throw new ConfigError(formatIssues(r.error.issues, cfg, { where: `experts "${spec.name}"`, known: (p) => (p.length ? undefined : Object.keys(spec.options)), label: (p) => pathString(p) }));
}

export const expertRegistry = new Registry<ExpertSpec, ExpertFactory>('expert type', (spec) => (cfg, rng) => spec.create(parseExpertConfig(spec, cfg), rng));
