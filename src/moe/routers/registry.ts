/**
 * The router registry. Every router file registers one RouterSpec: its factory, summary and
 * paper, a strict zod schema of its options (with defaults), and the traits the rest of the code
 * reads instead of router names (routing kind, batch dependence, HF config fields, how to
 * FLOP-match it in a benchmark, default dispatch). Options are validated here, once, in the
 * house error format (src/tensor/validate.ts).
 */
import type { Rng } from '../../tensor/random.js';
import { z, posInt, formatIssues, pathString, describeShape, ConfigError, type OptionDoc } from '../../tensor/validate.js';
import { Registry, type EntrySpec } from '../registry.js';
import type { Router } from '../types.js';
import type { DispatchConfig } from '../dispatch/registry.js';

/** A router's config: the common fields plus router-specific options. */
export interface RouterConfig {
  type: string;
  dModel: number;
  /** Real (computing) experts. */
  numExperts: number;
  /** Experts per token for token-choice routers (capacity per expert derives from it for expert choice). */
  topK: number;
  [option: string]: unknown;
}

/** The layer's dimensions, which every router receives besides its own options. */
export const ROUTER_BASE_FIELDS = ['type', 'dModel', 'numExperts', 'topK'] as const;

export type OptionShape = Record<string, z.ZodType>;

/** A router config after validation: the base fields and the options with defaults applied. */
export type ParsedRouterConfig<S extends OptionShape> = { type: string; dModel: number; numExperts: number; topK: number } & z.output<z.ZodObject<S>>;

/** Report a problem with a field of the router config: `issue('maxK', 'must be an integer in [1, 6]')`. */
export type IssueFn = (field: string, message: string) => void;

export interface RouterTraits<S extends OptionShape = OptionShape> {
  /** 'sparse': (token, expert, weight) assignments; 'soft': every expert slot mixes all tokens. */
  routing: 'sparse' | 'soft';
  /**
   * Experts computing per token: 'k' (exactly topK), 'one', 'variable' (data-dependent; may
   * differ from k, so a benchmark's compute is not matched by construction), 'slots' (soft).
   */
  expertsPerToken: 'k' | 'one' | 'variable' | 'slots';
  /**
   * Why a token's routing depends on the other tokens of its batch (absent: it does not).
   * Such routers train fine, but KV-cached decoding routes one token at a time.
   */
  batchDependent?: string;
  /** Routing reads ctx.tokenIds (the hidden states alone are not enough). */
  needsTokenIds?: boolean;
  /** Hugging Face config fields this router's options take their value from (HF field -> option), when the option is unset. */
  hfConfig?: Record<string, string>;
  /**
   * Options that match this router's compute to top-k token choice in a benchmark, when the
   * user set none of them; `note` explains the choice in the report.
   */
  flopMatch?: (b: { batchTokens: number; topK: number; numExperts: number }) => { options: Record<string, unknown>; note: string };
  /** The dispatch this algorithm is defined with, used when the layer config names none (absent: dropless). */
  defaultDispatch?: (cfg: ParsedRouterConfig<S>) => DispatchConfig;
  /** Why per-domain expert usage cannot show specialisation for this router (a report caveat). */
  usageCaveat?: string;
  /**
   * Extra RouterContext fields this router reads when the model supplies them (the model computes
   * 'tokenImportance' only for such routers; 'embeddings' and 'batchShape' come with every model forward).
   */
  context?: ('embeddings' | 'tokenImportance' | 'batchShape')[];
  /** Why the router's logits do not rank experts (hash routing): routing overrides (force/forbid experts) refuse it. */
  noLogits?: string;
  /** How its inference routing differs from training (schedules, stochastic or batch-level training routing): a report caveat. */
  inferenceDiffers?: string;
}

export interface RouterSpec<S extends OptionShape = OptionShape> extends EntrySpec {
  /** Option name -> zod schema with its rule, default and .describe() text. */
  options: S;
  /** Rules across options or against the layer's dimensions. */
  refine?: (cfg: ParsedRouterConfig<S>, issue: IssueFn) => void;
  /** Default true: topK must be an integer in [1, numExperts]. false: refine checks it, or the router ignores it. */
  checkTopK?: boolean;
  traits: RouterTraits<S>;
  create: (cfg: ParsedRouterConfig<S>, rng: Rng) => Router;
}

/** Type-checks a spec against its own option schema (the options' parsed types reach create/refine/traits). */
export function defineRouter<S extends OptionShape>(spec: RouterSpec<S>): RouterSpec {
  return spec as unknown as RouterSpec;
}

export type RouterFactory = (cfg: RouterConfig, rng: Rng) => Router;

const schemas = new WeakMap<RouterSpec, z.ZodType>();

/** The whole router config's schema: base fields + options, strict, with the spec's cross-field rules. */
export function routerSchema(spec: RouterSpec): z.ZodType {
  let s = schemas.get(spec);
  if (!s) {
    s = z
      .object({ type: z.string(), dModel: posInt(), numExperts: posInt(), topK: z.number({ error: 'must be a number' }), ...spec.options })
      .strict()
      .superRefine((c, ctx) => {
        const issue: IssueFn = (field, message) => ctx.addIssue({ code: 'custom', path: [field], message });
        if (spec.checkTopK !== false && !(Number.isInteger(c.topK) && c.topK >= 1 && c.topK <= c.numExperts)) {
          issue('topK', `must be an integer in [1, numExperts=${c.numExperts}]`);
        }
        spec.refine?.(c as ParsedRouterConfig<OptionShape>, issue);
      });
    schemas.set(spec, s);
  }
  return s;
}

/** Validate a router config against its spec; errors name the router and the option. */
export function parseRouterConfig(spec: RouterSpec, cfg: RouterConfig): ParsedRouterConfig<OptionShape> {
  const r = routerSchema(spec).safeParse(cfg);
  if (r.success) return r.data as ParsedRouterConfig<OptionShape>;
  const base = ROUTER_BASE_FIELDS as readonly PropertyKey[];
  throw new ConfigError(
    formatIssues(r.error.issues, cfg, {
      where: `router "${spec.name}"`,
      label: (p) => (p.length === 1 && base.includes(p[0]) ? String(p[0]) : `option ${pathString(p)}`),
      unknown: (p) => `unknown option "${pathString(p)}"`,
      known: (p) => (p.length === 0 ? Object.keys(spec.options) : undefined),
    }),
  );
}

export const routerRegistry = new Registry<RouterSpec, RouterFactory>('router', (spec) => (cfg, rng) => spec.create(parseRouterConfig(spec, cfg), rng));

/** Build a router from a (raw) config: the router, its spec and its validated config. */
export function buildRouter(cfg: RouterConfig, rng: Rng): { router: Router; spec: RouterSpec; config: ParsedRouterConfig<OptionShape> } {
  const spec = routerRegistry.spec(cfg.type);
  const config = parseRouterConfig(spec, cfg);
  return { router: spec.create(config, rng), spec, config };
}

/** A router's options as `moe-ts routers` prints them. */
export function routerOptionDocs(spec: RouterSpec): OptionDoc[] {
  return describeShape(spec.options);
}
