/**
 * The MoE layer: router -> dispatch (dropless, capacity or soft) -> experts -> combine, plus
 * optional shared experts, the configured balancing losses and per-call routing metrics.
 * Gradients reach the router through the combine weights (and soft dispatch/combine matrices).
 */
import { Tensor } from '../tensor/tensor.js';
import { Rng } from '../tensor/random.js';
import { add, scale } from '../tensor/index.js';
import { Module } from '../nn/module.js';
import type { ExpertBank, MoEAux, Router, RouterContext, RouterOutput } from './types.js';
import { routerRegistry, type RouterConfig } from './routers/registry.js';
import './routers/index.js';
import { lossRegistry } from './losses/index.js';
import { computeRoutingMetrics } from './metrics.js';
import { expertRegistry, SharedExperts, ACTIVATIONS, type Activation } from './experts/index.js';
import { droplessDispatch, capacityDispatch, softDispatch, DROP_ORDERS, type DispatchConfig, type DispatchResult, type DropOrder } from './dispatch/index.js';

export interface MoELayerConfig {
  dModel: number;
  /** Routed (computing) experts. */
  numExperts: number;
  /** Experts per token for token-choice routers (expert choice derives its capacity from it). */
  topK: number;
  experts: {
    type: Activation;
    /** Expert width (every expert, unless `sizes` gives per-expert widths). */
    dFF: number;
    /** Heterogeneous widths (HMoE), one per expert. */
    sizes?: number[];
    /** Multiplier on the output projections' init std (default 1). */
    outputScale?: number;
  };
  /** `type` picks the router from routerRegistry; other fields are the router's own options. */
  router: { type: string; [option: string]: unknown };
  /** Default: the router's own default (Switch: capacity), else dropless. Ignored by soft routers (Soft MoE never drops). */
  dispatch?: DispatchConfig;
  /** Dense experts every token goes through (DeepSeekMoE), added to the routed output. */
  sharedExperts?: { count: number; dFF: number };
  /** Balancing losses by lossRegistry name -> coefficient. */
  losses?: Record<string, number>;
}

export interface MoEForward {
  y: Tensor;
  aux: MoEAux;
}

const TOP_KEYS = ['dModel', 'numExperts', 'topK', 'experts', 'router', 'dispatch', 'sharedExperts', 'losses'];

function fail(field: string, rule: string, v: unknown): never {
  throw new Error(`MoELayer: config.${field} must be ${rule}, got ${JSON.stringify(v)}`);
}

function posInt(field: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) fail(field, 'a positive integer', v);
  return v;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function checkKeys(field: string, obj: Record<string, unknown>, known: readonly string[]): void {
  for (const k of Object.keys(obj)) {
    if (!known.includes(k)) throw new Error(`MoELayer: unknown field config.${field ? field + '.' : ''}${k} (known: ${known.join(', ')})`);
  }
}

/** Validate a config, failing with an error that names the field. Returns it normalised. */
export function validateMoEConfig(cfg: unknown): Required<Pick<MoELayerConfig, 'dispatch' | 'losses'>> & MoELayerConfig {
  if (!isObject(cfg)) throw new Error(`MoELayer: config must be an object, got ${JSON.stringify(cfg)}`);
  checkKeys('', cfg, TOP_KEYS);
  const dModel = posInt('dModel', cfg.dModel);
  const numExperts = posInt('numExperts', cfg.numExperts);
  const topK = posInt('topK', cfg.topK);
  if (topK > numExperts) fail('topK', `at most numExperts (${numExperts})`, topK);

  const ex = cfg.experts;
  if (!isObject(ex)) fail('experts', 'an object { type, dFF, sizes?, outputScale? }', ex);
  checkKeys('experts', ex, ['type', 'dFF', 'sizes', 'outputScale']);
  if (typeof ex.type !== 'string' || !expertRegistry.has(ex.type)) fail('experts.type', `one of ${expertRegistry.names().join(', ')}`, ex.type);
  if (!(ACTIVATIONS as readonly string[]).includes(ex.type)) fail('experts.type', `one of ${ACTIVATIONS.join(', ')}`, ex.type);
  if (ex.sizes === undefined) posInt('experts.dFF', ex.dFF);
  else {
    if (ex.dFF !== undefined) posInt('experts.dFF', ex.dFF);
    if (!Array.isArray(ex.sizes) || ex.sizes.length !== numExperts) fail('experts.sizes', `an array of ${numExperts} expert widths (one per expert)`, ex.sizes);
    (ex.sizes as unknown[]).forEach((f, i) => posInt(`experts.sizes[${i}]`, f));
  }
  if (ex.outputScale !== undefined && (typeof ex.outputScale !== 'number' || !Number.isFinite(ex.outputScale) || ex.outputScale <= 0)) {
    fail('experts.outputScale', 'a positive finite number', ex.outputScale);
  }

  const r = cfg.router;
  if (!isObject(r)) fail('router', 'an object { type, ...options }', r);
  if (typeof r.type !== 'string' || !routerRegistry.has(r.type)) fail('router.type', `one of ${routerRegistry.names().join(', ') || '(no routers registered)'}`, r.type);
  for (const k of ['dModel', 'numExperts', 'topK']) {
    if (k in r) throw new Error(`MoELayer: config.router.${k} is taken from config.${k}; remove it from the router options`);
  }

  let dispatch: DispatchConfig = { type: 'dropless' };
  if (cfg.dispatch !== undefined) {
    const d = cfg.dispatch;
    if (!isObject(d)) fail('dispatch', "{ type: 'dropless' } or { type: 'capacity', capacityFactor }", d);
    if (d.type === 'dropless') {
      checkKeys('dispatch', d, ['type']);
      dispatch = { type: 'dropless' };
    } else if (d.type === 'capacity') {
      checkKeys('dispatch', d, ['type', 'capacityFactor', 'dropOrder']);
      const cf = d.capacityFactor;
      if (typeof cf !== 'number' || !Number.isFinite(cf) || cf <= 0) fail('dispatch.capacityFactor', 'a positive finite number', cf);
      if (d.dropOrder !== undefined && !(DROP_ORDERS as readonly unknown[]).includes(d.dropOrder)) fail('dispatch.dropOrder', `one of ${DROP_ORDERS.join(', ')}`, d.dropOrder);
      dispatch = { type: 'capacity', capacityFactor: cf, ...(d.dropOrder !== undefined ? { dropOrder: d.dropOrder as DropOrder } : {}) };
    } else fail('dispatch.type', "'dropless' or 'capacity'", d.type);
  }

  if (cfg.sharedExperts !== undefined) {
    const s = cfg.sharedExperts;
    if (!isObject(s)) fail('sharedExperts', 'an object { count, dFF }', s);
    checkKeys('sharedExperts', s, ['count', 'dFF']);
    posInt('sharedExperts.count', s.count);
    posInt('sharedExperts.dFF', s.dFF);
  }

  const losses: Record<string, number> = {};
  if (cfg.losses !== undefined) {
    if (!isObject(cfg.losses)) fail('losses', 'an object { lossName: coefficient }', cfg.losses);
    for (const [name, c] of Object.entries(cfg.losses)) {
      if (!lossRegistry.has(name)) throw new Error(`MoELayer: config.losses.${name}: unknown loss "${name}": expected one of ${lossRegistry.names().join(', ')}`);
      if (typeof c !== 'number' || !Number.isFinite(c) || c < 0) fail(`losses.${name}`, 'a finite non-negative coefficient', c);
      losses[name] = c;
    }
  }
  return { ...(cfg as unknown as MoELayerConfig), dModel, numExperts, topK, dispatch, losses };
}

export class MoELayer extends Module {
  readonly config: MoELayerConfig;
  readonly dModel: number;
  readonly numExperts: number;
  readonly topK: number;
  router: Router;
  experts: ExpertBank;
  shared: SharedExperts | null;
  private dispatchCfg: DispatchConfig;
  private readonly lossCoefs: [string, number][];
  /** Tokens per expert routed in training-mode forwards since the last afterStep(). */
  private stepLoad: Float64Array;

  constructor(config: MoELayerConfig, rng: Rng = new Rng(0)) {
    super();
    const cfg = validateMoEConfig(config);
    this.config = config;
    this.dModel = cfg.dModel;
    this.numExperts = cfg.numExperts;
    this.topK = cfg.topK;
    this.dispatchCfg = cfg.dispatch; // replaced by the router's default below when the config names none
    this.lossCoefs = Object.entries(cfg.losses);
    const { type: routerType, ...routerOpts } = cfg.router;
    const rcfg: RouterConfig = { ...routerOpts, type: routerType, dModel: cfg.dModel, numExperts: cfg.numExperts, topK: cfg.topK };
    this.router = routerRegistry.get(routerType)(rcfg, rng);
    if (config.dispatch === undefined && this.router.defaultDispatch) this.dispatchCfg = this.router.defaultDispatch;
    if (this.router.numExperts !== cfg.numExperts) {
      throw new Error(`MoELayer: router "${routerType}" reports ${this.router.numExperts} experts, config.numExperts is ${cfg.numExperts}`);
    }
    const ex = cfg.experts;
    this.experts = expertRegistry.get(ex.type)(
      { numExperts: cfg.numExperts, dModel: cfg.dModel, dFF: ex.dFF, sizes: ex.sizes, outputScale: ex.outputScale },
      rng,
    );
    this.shared = cfg.sharedExperts
      ? new SharedExperts(cfg.sharedExperts.count, cfg.dModel, cfg.sharedExperts.dFF, ex.type, rng, { outputScale: ex.outputScale })
      : null;
    this.stepLoad = new Float64Array(cfg.numExperts);
  }

  /** x [T, dModel] -> y [T, dModel] and the auxiliary losses, routing record and metrics. */
  forward(x: Tensor, ctx: RouterContext): MoEForward {
    if (x.ndim !== 2 || x.shape[1] !== this.dModel) {
      throw new Error(`MoELayer.forward: x must be [T, ${this.dModel}] (tokens x dModel), got [${x.shape.join(', ')}]`);
    }
    const T = x.shape[0];
    const E = this.numExperts;
    const out = this.router.route(x, ctx);
    let res: DispatchResult;
    if (out.routing.kind === 'soft') res = softDispatch(x, out.routing, this.experts);
    else if (this.dispatchCfg.type === 'capacity') res = capacityDispatch(x, out.routing, this.experts, this.dispatchCfg.capacityFactor, this.dispatchCfg.dropOrder);
    else res = droplessDispatch(x, out.routing, this.experts);
    let y = res.y;
    if (this.shared) y = add(y, this.shared.forward(x));

    const losses: Record<string, Tensor> = {};
    for (const [name, coef] of this.lossCoefs) {
      losses[name] = scale(lossRegistry.get(name)(out, { numExperts: E, tokens: T, topK: this.topK }), coef);
    }
    for (const [name, l] of Object.entries(out.losses)) losses[name in losses ? `router.${name}` : name] = l;

    const metrics = computeRoutingMetrics(out, E, T, res.kept);
    if (ctx.training) this.accumulateLoad(out);
    return { y, aux: { losses, router: out, metrics } };
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

  /** Multiply-adds of the experts per token routed to expert e (plus shared experts, per token). */
  flopsPerToken(e: number): number {
    return this.experts.flopsPerToken(e);
  }
}
