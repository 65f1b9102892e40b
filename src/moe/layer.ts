/**
 * The MoE layer: router -> dispatch (dropless, capacity or soft) -> experts -> combine, plus
 * optional shared experts, the configured balancing losses and per-call routing metrics.
 * Gradients reach the router through the combine weights (and soft dispatch/combine matrices).
 */
import { Tensor } from '../tensor/tensor.js';
import { Rng } from '../tensor/random.js';
import { add, scale, reshape } from '../tensor/index.js';
import { z, posInt, nonNegative, formatIssues, knownKeys, pathString, orList, statement, ConfigError } from '../tensor/validate.js';
import { Module } from '../nn/module.js';
import { Linear } from '../nn/layers.js';
import type { ExpertBank, MoEAux, Router, RouterContext, RouterOutput } from './types.js';
import type { RoutingOverride } from './override.js';
import { routerRegistry, buildRouter, ROUTER_BASE_FIELDS, type RouterConfig, type RouterSpec } from './routers/registry.js';
import './routers/index.js';
import { lossRegistry } from './losses/index.js';
import { computeRoutingMetrics } from './metrics.js';
import { expertRegistry, expertSchema, type ExpertSpec, type SharedExpertBank, type ParsedExpertConfig, type ExpertOptionShape } from './experts/index.js';
import { dispatchRegistry, dispatchSchema, sparseDispatchNames, defaultDispatchConfig, type DispatchConfig, type DispatchResult, type DispatchSpec } from './dispatch/index.js';

export interface MoELayerConfig {
  dModel: number;
  /** Routed (computing) experts. */
  numExperts: number;
  /** Experts per token for token-choice routers (expert choice derives its capacity from it). */
  topK: number;
  /**
   * `type` picks the expert type from expertRegistry; other fields are its options (for the FFN
   * types: dFF, sizes for heterogeneous widths (HMoE), outputScale on the output projections' init std).
   */
  experts: { type: string; dFF?: number; sizes?: number[]; outputScale?: number; [option: string]: unknown };
  /** `type` picks the router from routerRegistry; other fields are the router's own options. */
  router: { type: string; [option: string]: unknown };
  /**
   * A sparse dispatch from dispatchRegistry. Default: the router's own default (Switch: capacity),
   * else dropless. Soft routers always use the soft dispatch (Soft MoE never drops).
   */
  dispatch?: DispatchConfig;
  /** Dense experts every token goes through (DeepSeekMoE), of the routed experts' type, added to the routed output. */
  sharedExperts?: { count: number; dFF: number };
  /** Balancing losses by lossRegistry name -> coefficient. */
  losses?: Record<string, number>;
  /**
   * MH-MoE (Wu et al. 2024, "Multi-Head Mixture-of-Experts"): split each token into this many
   * sub-tokens of dModel / subTokens (after a d x d multi-head projection), route and compute each
   * sub-token separately, merge back and project (d x d). Default 1: tokens are routed whole.
   */
  subTokens?: number;
}

export interface MoEForward {
  y: Tensor;
  aux: MoEAux;
}

const typed = () => z.looseObject({ type: z.string({ error: 'must be a string' }) });

/** The layer's own fields; the experts', router's and dispatch's options are checked by their specs. */
const LayerSchema = z
  .object({
    dModel: posInt(),
    numExperts: posInt(),
    topK: posInt(),
    experts: typed(),
    router: typed(),
    dispatch: typed().optional(),
    sharedExperts: z.object({ count: posInt(), dFF: posInt() }).strict().optional(),
    losses: z.record(z.string(), nonNegative('a finite non-negative coefficient')).optional(),
    subTokens: posInt().optional(),
  })
  .strict()
  .superRefine((c, ctx) => {
    const issue = (path: (string | number)[], message: string | ReturnType<typeof statement>) => ctx.addIssue({ code: 'custom', path, ...(typeof message === 'string' ? { message } : message) });
    // a router that checks topK itself (checkTopK: false, e.g. null experts: k over real + null experts) may exceed numExperts
    if (c.topK > c.numExperts && routerRegistry.find(c.router.type)?.checkTopK !== false) issue(['topK'], `must be at most numExperts (${c.numExperts})`);
    if (c.subTokens !== undefined && c.dModel % c.subTokens !== 0) issue(['subTokens'], `must divide dModel (${c.dModel})`);
    if (!expertRegistry.has(c.experts.type)) issue(['experts', 'type'], `must be one of ${expertRegistry.names().join(', ')}`);
    for (const k of ['numExperts', 'dModel']) if (k in c.experts) issue(['experts', k], `is taken from config.${k}; remove it from the expert options`);
    if (!routerRegistry.has(c.router.type)) issue(['router', 'type'], `must be one of ${routerRegistry.names().join(', ') || '(no routers registered)'}`);
    for (const k of ROUTER_BASE_FIELDS) if (k !== 'type' && k in c.router) issue(['router', k], `is taken from config.${k}; remove it from the router options`);
    if (c.dispatch && !sparseDispatchNames().includes(c.dispatch.type)) issue(['dispatch', 'type'], `must be ${orList(sparseDispatchNames().map((n) => `'${n}'`))}`);
    for (const name of Object.keys(c.losses ?? {})) {
      if (!lossRegistry.has(name)) issue(['losses', name], statement(`unknown loss "${name}": expected one of ${lossRegistry.names().join(', ')}`));
    }
  });

export type ValidMoEConfig = Required<Pick<MoELayerConfig, 'losses'>> & MoELayerConfig;

/** Validate a config, failing with one error that names each bad field (the house format). Returns it normalised. */
export function validateMoEConfig(cfg: unknown): ValidMoEConfig & { dispatch: DispatchConfig } {
  const fail = (issues: readonly z.core.$ZodIssue[], schema: z.ZodType): never => {
    throw new ConfigError(
      formatIssues(issues, cfg, {
        where: 'MoELayer',
        label: (p) => (p.length ? `config.${pathString(p)}` : 'config'),
        unknown: (p) => `unknown field config.${pathString(p)}`,
        // the layer fills numExperts/dModel of the experts itself
        known: (p) => knownKeys(schema, p)?.filter((k) => !(p[0] === 'experts' && (k === 'numExperts' || k === 'dModel'))),
      }),
    );
  };
  const r = LayerSchema.safeParse(cfg);
  if (!r.success) fail(r.error.issues, LayerSchema);
  const c = r.data!;
  // the type's own options, checked by its spec with the layer's dimensions
  const prefixed = (schema: z.ZodType, value: unknown, prefix: string): void => {
    const rr = schema.safeParse(value);
    if (!rr.success)
      fail(
        rr.error.issues.map((i) => ({ ...i, path: [prefix, ...i.path] })),
        z.object({ [prefix]: schema }),
      );
  };
  prefixed(expertSchema(expertRegistry.spec(c.experts.type)), { ...c.experts, numExperts: c.numExperts, dModel: c.dModel / (c.subTokens ?? 1) }, 'experts');
  if (c.dispatch) prefixed(dispatchSchema(dispatchRegistry.spec(c.dispatch.type)), c.dispatch, 'dispatch');
  return { ...(cfg as MoELayerConfig), dModel: c.dModel, numExperts: c.numExperts, topK: c.topK, dispatch: (c.dispatch as DispatchConfig) ?? defaultDispatchConfig(), losses: c.losses ?? {} };
}

export class MoELayer extends Module {
  readonly config: MoELayerConfig;
  readonly dModel: number;
  readonly numExperts: number;
  readonly topK: number;
  router: Router;
  experts: ExpertBank;
  shared: SharedExpertBank | null;
  /** MH-MoE's multi-head and merge projections (d x d; null unless subTokens > 1). */
  multi_head: Linear | null = null;
  merge: Linear | null = null;
  /** Sub-tokens per token (MH-MoE; 1: whole tokens). */
  readonly subTokens: number;
  /** The specs of the parts (what `moe-ts routers` lists), for code that reads their traits. */
  readonly specs: { router: RouterSpec; experts: ExpertSpec; dispatch: DispatchSpec };
  private readonly dispatchOptions: DispatchConfig;
  private readonly lossCoefs: [string, number][];
  /** Tokens per expert routed in training-mode forwards since the last afterStep(). */
  private stepLoad: Float64Array;
  /**
   * Rewrites the router's choice before dispatch (force/forbid experts, self-contrast's weak
   * routing, re-routing: src/moe/override.ts). null: the router's routing, untouched.
   */
  routingOverride: RoutingOverride | null = null;

  constructor(config: MoELayerConfig, rng: Rng = new Rng(0)) {
    super();
    const cfg = validateMoEConfig(config);
    this.config = config;
    this.dModel = cfg.dModel;
    this.numExperts = cfg.numExperts;
    this.topK = cfg.topK;
    this.lossCoefs = Object.entries(cfg.losses);
    this.subTokens = cfg.subTokens ?? 1;
    // router and experts see sub-tokens of width dModel / subTokens
    const dIn = cfg.dModel / this.subTokens;
    const { type: routerType, ...routerOpts } = cfg.router;
    const rcfg: RouterConfig = { ...routerOpts, type: routerType, dModel: dIn, numExperts: cfg.numExperts, topK: cfg.topK };
    const built = buildRouter(rcfg, rng);
    this.router = built.router;
    if (this.router.numExperts !== cfg.numExperts) {
      throw new Error(`MoELayer: router "${routerType}" reports ${this.router.numExperts} experts, config.numExperts is ${cfg.numExperts}`);
    }
    // the configured dispatch, unless the config names none or it cannot consume this router's routing kind
    const routerDefault = built.spec.traits.defaultDispatch?.(built.config) ?? defaultDispatchConfig(built.spec.traits.routing);
    let dispatch = config.dispatch === undefined ? routerDefault : cfg.dispatch;
    if (dispatchRegistry.spec(dispatch.type).routing !== built.spec.traits.routing) dispatch = routerDefault;
    const dispatchSpec = dispatchRegistry.spec(dispatch.type);
    if (dispatchSpec.routing !== built.spec.traits.routing) {
      throw new Error(`MoELayer: router "${routerType}" makes ${built.spec.traits.routing} routing but its default dispatch "${dispatch.type}" consumes ${dispatchSpec.routing} routing`);
    }
    this.dispatchOptions = dispatchSchema(dispatchSpec).parse(dispatch) as DispatchConfig;
    const expertSpec = expertRegistry.spec(cfg.experts.type);
    const { type: _type, ...expertOpts } = cfg.experts;
    const ecfg = { ...expertOpts, numExperts: cfg.numExperts, dModel: dIn };
    this.experts = expertRegistry.get(cfg.experts.type)(ecfg, rng);
    if (cfg.sharedExperts && !expertSpec.createShared) throw new ConfigError(`MoELayer: config.sharedExperts: expert type "${expertSpec.name}" has no shared-expert form`);
    this.shared = cfg.sharedExperts
      ? expertSpec.createShared!(cfg.sharedExperts.count, dIn, cfg.sharedExperts.dFF, expertSchema(expertSpec).parse(ecfg) as ParsedExpertConfig<ExpertOptionShape>, rng)
      : null;
    this.specs = { router: built.spec, experts: expertSpec, dispatch: dispatchSpec };
    this.stepLoad = new Float64Array(cfg.numExperts);
    if (this.subTokens > 1) {
      this.multi_head = new Linear(cfg.dModel, cfg.dModel, rng, { std: 1 / Math.sqrt(cfg.dModel) });
      this.merge = new Linear(cfg.dModel, cfg.dModel, rng, { std: 1 / Math.sqrt(cfg.dModel) });
    }
  }

  /**
   * x [T, dModel] -> y [T, dModel] and the auxiliary losses, routing record and metrics.
   * `routerInput` [T, dModel]: what the router reads instead of x (MoEUT's peri-layernorm: the
   * router sees the normalised rows, the experts the raw ones).
   */
  forward(x: Tensor, ctx: RouterContext, routerInput?: Tensor): MoEForward {
    if (x.ndim !== 2 || x.shape[1] !== this.dModel) {
      throw new Error(`MoELayer.forward: x must be [T, ${this.dModel}] (tokens x dModel), got [${x.shape.join(', ')}]`);
    }
    if (routerInput && (routerInput.ndim !== 2 || routerInput.shape[0] !== x.shape[0] || routerInput.shape[1] !== this.dModel))
      throw new Error(`MoELayer.forward: routerInput must be [${x.shape[0]}, ${this.dModel}] like x, got [${routerInput.shape.join(', ')}]`);
    if (routerInput && this.multi_head) throw new Error('MoELayer.forward: a separate routerInput is not supported with sub-tokens (MH-MoE)');
    if (this.multi_head && this.merge) {
      const h = this.subTokens;
      const T0 = x.shape[0];
      const ids = ctx.tokenIds;
      // each sub-token keeps its token's id (hash routing)
      const subCtx = ids ? { ...ctx, tokenIds: Int32Array.from({ length: T0 * h }, (_, i) => ids[Math.floor(i / h)]) } : ctx;
      const r = this.forwardTokens(reshape(this.multi_head.forward(x), [T0 * h, this.dModel / h]), subCtx);
      return { y: this.merge.forward(reshape(r.y, [T0, this.dModel])), aux: r.aux };
    }
    return this.forwardTokens(x, ctx, routerInput);
  }

  /** Route and compute rows of the router's width (whole tokens, or MH-MoE sub-tokens). */
  private forwardTokens(x: Tensor, ctx: RouterContext, routerInput?: Tensor): MoEForward {
    const T = x.shape[0];
    const E = this.numExperts;
    const out = this.route(routerInput ?? x, ctx);
    const d = this.specs.dispatch;
    if (out.routing.kind !== d.routing)
      throw new Error(`MoELayer.forward: router "${this.specs.router.name}" returned ${out.routing.kind} routing; dispatch "${d.name}" consumes ${d.routing} routing`);
    // shared experts the bank can run as one more group of its own op go in there (one gather/GEMM chain, not a second FFN)
    const fused = this.shared?.fusedWith?.(this.experts) ?? undefined;
    const res: DispatchResult = d.run(x, out.routing, this.experts, this.dispatchOptions, fused);
    let y = res.y;
    if (this.shared && !res.sharedIncluded) y = add(y, this.shared.forward(x));

    const losses: Record<string, Tensor> = {};
    for (const [name, coef] of this.lossCoefs) {
      losses[name] = scale(lossRegistry.get(name)(out, { numExperts: E, tokens: T, topK: this.topK }), coef);
    }
    for (const [name, l] of Object.entries(out.losses)) losses[name in losses ? `router.${name}` : name] = l;

    const metrics = computeRoutingMetrics(out, E, T, res.kept);
    if (ctx.training) this.accumulateLoad(out);
    return { y, aux: { losses, router: out, metrics, ...(res.kept ? { kept: res.kept } : {}) } };
  }

  /** The router's output on x [T, width], after the routing override if one is set. */
  route(x: Tensor, ctx: RouterContext): RouterOutput {
    const out = this.router.route(x, { ...ctx, experts: this.experts });
    const o = this.routingOverride;
    if (!o) return out;
    const t = this.specs.router.traits;
    return o.apply(x, out, { numExperts: this.numExperts, topK: this.topK, router: this.specs.router.name, ...(t.noLogits ? { noLogits: t.noLogits } : {}) });
  }

  private accumulateLoad(out: RouterOutput): void {
    const load = this.stepLoad;
    const r = out.routing;
    if (r.kind === 'sparse') {
      const ei = r.expertIdx;
      for (let i = 0; i < ei.length; i++) load[ei[i]]++;
    } else {
      // soft slots: each expert's share of the token mass its slots draw
      const S = r.slotsPerExpert;
      const d = r.dispatch.data;
      const cols = this.numExperts * S;
      for (let i = 0; i < d.length; i++) load[((i % cols) / S) | 0] += d[i];
    }
  }

  /** Tokens per expert accumulated since the last afterStep() (a copy). */
  currentLoad(): Float64Array {
    return this.stepLoad.slice();
  }

  /** Once per optimizer step: hand the step's load to the router (bias updates etc.) and reset it. */
  afterStep(): void {
    const load = this.stepLoad;
    this.stepLoad = new Float64Array(this.numExperts);
    this.router.afterStep?.(load);
  }

  /** Multiply-adds of expert e per token routed to it (shared experts not included: see shared.flopsPerToken()). */
  flopsPerToken(e: number): number {
    return this.experts.flopsPerToken(e);
  }
}
