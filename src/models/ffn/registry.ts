/**
 * The FFN-kind registry: mixture layers that replace a block's MoE FFN but are not a router +
 * dispatch + expert bank (PEER's product-key retrieval over a million single-neuron experts,
 * Multilinear MoE's factorised soft mixture). Each kind registers one spec with its factory and a
 * strict zod schema of its options; a model config picks one with `ffn_type` and `ffn_options`,
 * and it replaces the MoE FFN on the layers the config makes MoE layers. The decoder layer builds
 * whatever the registry returns and never matches on a name.
 */
import type { Tensor } from '../../tensor/tensor.js';
import type { Rng } from '../../tensor/random.js';
import { z, formatIssues, pathString, ConfigError } from '../../tensor/validate.js';
import type { Module } from '../../nn/module.js';
import { Registry, type EntrySpec } from '../../moe/registry.js';
import type { RouterContext, MoEAux } from '../../moe/types.js';
import type { MoELayerConfig } from '../../moe/layer.js';
import type { ModelConfig } from '../config.js';

/** What an FFN kind returns, y [T, d] with its own losses (already scaled) and scalar metrics. */
export interface FFNResult {
  y: Tensor;
  losses?: Record<string, Tensor>;
  metrics?: Record<string, number>;
  /** MoE sub-layers' records (a kind may hold several routers: CartesianMoE); the host traces each and sums their losses. */
  aux?: MoEAux[];
}

/** What every FFN kind implements, x [T, d] -> y [T, d]. */
export interface FFNModule extends Module {
  forward(x: Tensor, ctx: RouterContext): FFNResult;
  /** Parameters one token uses (retrieved experts only), for FLOP-matched comparisons. */
  activeParameters(): number;
  /** Bookkeeping after an optimizer step (inner MoE layers' load and bias updates). */
  afterStep?(): void;
}

/** What the host model lends an FFN kind at build time (kinds below models/ cannot import it). */
export interface FFNBuildHelpers {
  /** The MoE layer config the host derives from a model config (router, experts, dispatch, losses). */
  moeLayerConfig?: (c: ModelConfig) => MoELayerConfig;
}

/** The zod shape of an FFN kind's options. */
export type FFNOptionShape = Record<string, z.ZodType>;
/** An FFN kind's options after parsing (defaults applied). */
export type ParsedFFNOptions<S extends FFNOptionShape> = z.output<z.ZodObject<S>>;

/** One FFN kind with its factory, summary, paper, strict options schema and size for the memory estimate. */
export interface FFNSpec<S extends FFNOptionShape = FFNOptionShape> extends EntrySpec {
  options: S;
  /** Rules across options or against the model config. */
  refine?: (opts: ParsedFFNOptions<S>, model: ModelConfig, issue: (field: string, message: string) => void) => void;
  create: (model: ModelConfig, opts: ParsedFFNOptions<S>, rng: Rng, layerIndex: number, helpers?: FFNBuildHelpers) => FFNModule;
  /** Parameters of one layer and its largest tensor (elements), for the pre-allocation memory estimate. */
  size: (model: ModelConfig, opts: ParsedFFNOptions<S>) => { parameters: number; largest: number; tensors: number };
  /** Activation floats per token kept for backward (memory estimate). */
  activationsPerToken: (model: ModelConfig, opts: ParsedFFNOptions<S>) => number;
}

/** Register-time helper that keeps the options' types inside the spec. */
export function defineFFN<S extends FFNOptionShape>(spec: FFNSpec<S>): FFNSpec {
  return spec as unknown as FFNSpec;
}

/** FFN kinds by name. */
export const ffnRegistry = new Registry<FFNSpec>('FFN kind');

/** Validate ffn_options against the kind's schema (house error format, naming model.ffn_options.<field>). */
export function parseFFNOptions(c: ModelConfig, kind: string, value: unknown = c.ffn_options ?? {}): { spec: FFNSpec; opts: ParsedFFNOptions<FFNOptionShape> } {
  if (!ffnRegistry.has(kind)) throw new ConfigError(`model config: ffn_type must be one of ${ffnRegistry.names().join(', ')}, got ${JSON.stringify(kind)}`);
  const spec = ffnRegistry.spec(kind);
  const schema = z
    .object(spec.options)
    .strict()
    .superRefine((o, ctx) => spec.refine?.(o, c, (field, message) => ctx.addIssue({ code: 'custom', path: [field], message })));
  const r = schema.safeParse(value);
  if (!r.success) {
    throw new ConfigError(
      formatIssues(r.error.issues, value, {
        where: `model config: ffn "${kind}"`,
        label: (p) => `ffn_options${p.length ? '.' + pathString(p) : ''}`,
        known: (p) => (p.length ? undefined : Object.keys(spec.options)),
      }),
    );
  }
  return { spec, opts: r.data as ParsedFFNOptions<FFNOptionShape> };
}

/** Build layer `layerIndex`'s FFN of kind `kind` from the model config. */
export function buildFFN(c: ModelConfig, kind: string, rng: Rng, layerIndex: number, helpers?: FFNBuildHelpers): FFNModule {
  const { spec, opts } = parseFFNOptions(c, kind);
  return spec.create(c, opts, rng, layerIndex, helpers);
}
