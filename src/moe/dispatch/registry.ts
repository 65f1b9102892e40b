/**
 * The dispatch registry: how routed tokens reach the experts and come back. Each dispatch file
 * registers one DispatchSpec (summary, paper, the routing kind it consumes, a strict zod option
 * schema, its run function). A layer config names a sparse dispatch; soft routing always takes
 * the default dispatch registered for soft routing (never configured).
 */
import type { Tensor } from '../../tensor/tensor.js';
import type { FusedSharedSwiglu } from '../../tensor/ops/moe_ops.js';
import { z } from '../../tensor/validate.js';
import { Registry, type EntrySpec } from '../registry.js';
import type { ExpertBank, SoftRouting, SparseRouting } from '../types.js';
import type { DispatchResult } from './dropless.js';

/** A dispatch by registry name plus its options, e.g. { type: 'capacity', capacityFactor: 1.25 }. */
export interface DispatchConfig {
  type: string;
  [option: string]: unknown;
}

export type DispatchOptionShape = Record<string, z.ZodType>;

export interface DispatchSpec<S extends DispatchOptionShape = DispatchOptionShape> extends EntrySpec {
  /** The routing record it consumes. */
  routing: 'sparse' | 'soft';
  /** The dispatch of routers of this routing kind whose layer config and spec name none (one per routing kind sets it). */
  isDefault?: boolean;
  options: S;
  /** Hugging Face / model-config fields its options take their value from (field -> option). */
  hfConfig?: Record<string, string>;
  /** Option values a model config implies when it names this dispatch without them. */
  configDefaults?: Partial<z.output<z.ZodObject<S>>>;
  /**
   * `shared`, when given, are shared experts the bank may fuse into its expert op (one more group
   * every token joins); a dispatch that did so returns sharedIncluded: true, else the layer adds them.
   */
  run: (x: Tensor, routing: SparseRouting | SoftRouting, experts: ExpertBank, options: z.output<z.ZodObject<S>>, shared?: FusedSharedSwiglu) => DispatchResult;
}

export function defineDispatch<S extends DispatchOptionShape>(spec: DispatchSpec<S>): DispatchSpec {
  return spec as unknown as DispatchSpec;
}

export const dispatchRegistry = new Registry<DispatchSpec>('dispatch');

const schemas = new WeakMap<DispatchSpec, z.ZodType>();

/** { type, ...options }, strict. */
export function dispatchSchema(spec: DispatchSpec): z.ZodType {
  let s = schemas.get(spec);
  if (!s) {
    s = z.object({ type: z.string(), ...spec.options }).strict();
    schemas.set(spec, s);
  }
  return s;
}

/** The dispatches a config may name for sparse routing. */
export function sparseDispatchNames(): string[] {
  return dispatchRegistry
    .specs()
    .filter((s) => s.routing === 'sparse')
    .map((s) => s.name);
}

/** The dispatch a router of this routing kind gets when neither the layer config nor its spec names one. */
export function defaultDispatchConfig(routing: 'sparse' | 'soft' = 'sparse'): DispatchConfig {
  const s = dispatchRegistry.specs().find((d) => d.routing === routing && d.isDefault);
  if (!s) throw new Error(`no default dispatch for ${routing} routing is registered`);
  return { type: s.name };
}
