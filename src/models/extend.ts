/**
 * Adding experts to a trained MoE for a new domain, as a pure model transform (MoExtend:
 * Tuning-free Multimodal Expansion via Mixture-of-Experts, 2024; PMoE: Progressive Mixture of
 * Experts with Asymmetric Transformer for Continual Learning, 2023): every MoE layer gains `add`
 * experts (copies of chosen existing experts, or fresh) and the router gains their rows (copies of
 * the source experts' rows, or fresh). The router becomes 'phase-in' (src/moe/routers/phase-in.ts)
 * with the new experts' selection offset at -1: they are never selected, so the extended model
 * computes exactly the old one; training then phases them in. `extendTrainable` says which
 * entries train (the new experts, the new router rows, optionally the old rows).
 */
import { MoETransformerLM } from './transformer.js';
import { parseModelConfig, ConfigError, type ModelConfig } from './config.js';
import type { Parameter } from '../nn/index.js';

/** How to extend. */
export interface ExtendOptions {
  /** New experts per MoE layer. */
  add: number;
  /** 'copy': new expert j of layer l copies sources[l][j] (weights and router row); 'fresh': new random init. */
  init?: 'copy' | 'fresh';
  /** Per MoE layer, the source expert of each new expert (copy init; default: expert j mod E). */
  sources?: number[][];
  /** Steps over which new experts are phased in (the phase-in router's option; default 50). */
  phaseInSteps?: number;
  /** Seed of the fresh initialisation. */
  seed?: number;
}

const PER_EXPERT = /^layers\.(\d+)\.block_sparse_moe\.(experts|router)\./;

function fail(msg: string): never {
  throw new ConfigError(`extend: ${msg}`);
}

/** The extended model config: E + add experts behind the phase-in router (from topk with renormalised weights, or phase-in). */
export function extendedConfig(c: ModelConfig, add: number, phaseInSteps?: number): ModelConfig {
  if (!Number.isInteger(add) || add < 1) fail(`add must be a positive integer, got ${add}`);
  if (c.num_local_experts === 0) fail('the model is dense (num_local_experts 0): upcycle it first');
  if (c.expert_sizes) fail('heterogeneous expert widths (expert_sizes) are not supported');
  const ro = c.router_options as Record<string, unknown>;
  if (c.router_type === 'topk') {
    // only renormalised weights are independent of the added experts' logits
    if (c.norm_topk_prob === false || ro.normalize === false)
      fail('router topk with normalize false (norm_topk_prob false): its weights would change with the added experts; only renormalised top-k extends exactly');
    if (ro.noisyGating === true) fail('router topk with noisyGating is not supported');
  } else if (c.router_type !== 'phase-in') fail(`router_type "${c.router_type}" is not supported (topk with renormalised weights, or phase-in)`);
  const steps = phaseInSteps ?? (c.router_type === 'phase-in' ? (ro.phaseInSteps as number | undefined) : undefined);
  return parseModelConfig({ ...c, num_local_experts: c.num_local_experts + add, router_type: 'phase-in', router_options: steps !== undefined ? { phaseInSteps: steps } : {} }, 'extended model config');
}

/** The model with `add` new experts per MoE layer; it computes exactly what `model` computes until the offsets rise. */
export function extendExperts(model: MoETransformerLM, o: ExtendOptions): { model: MoETransformerLM; sources: number[][] } {
  const c = model.config;
  const E = c.num_local_experts;
  const cfg = extendedConfig(c, o.add, o.phaseInSteps);
  const init = o.init ?? 'copy';
  if (init !== 'copy' && init !== 'fresh') fail(`init must be copy or fresh, got ${String(init)}`);
  const moe = model.layers.flatMap((l, i) => (l.block_sparse_moe ? [i] : []));
  const sources = o.sources ?? moe.map(() => Array.from({ length: o.add }, (_, j) => j % E));
  if (sources.length !== moe.length) fail(`sources needs one list per MoE layer (${moe.length}), got ${sources.length}`);
  sources.forEach((s, l) => {
    if (s.length !== o.add || s.some((e) => !Number.isInteger(e) || e < 0 || e >= E)) fail(`sources[${l}] must list ${o.add} experts in [0, ${E}), got [${s.join(', ')}]`);
  });
  const out = new MoETransformerLM(cfg, o.seed ?? 0);
  const src = model.stateDict();
  for (const [name, t] of out.stateDict()) {
    const m = PER_EXPERT.exec(name);
    const li = m ? moe.indexOf(Number(m[1])) : -1;
    if (li >= 0 && name.endsWith('.router.offset')) {
      // old offsets kept (0 from a topk router), new experts start never selected
      const s = src.get(name);
      t.data.fill(-1);
      if (s) t.data.set(s.data.subarray(0, E));
      else t.data.fill(0, 0, E);
      continue;
    }
    const s = src.get(name);
    if (!s) fail(`tensor ${name} has no counterpart in the source model`);
    if (li >= 0 && s.shape[0] === E && t.shape[0] === E + o.add) {
      const per = s.data.length / E;
      t.data.set(s.data);
      if (init === 'copy') sources[li].forEach((e, j) => t.data.set(s.data.subarray(e * per, (e + 1) * per), (E + j) * per));
      continue;
    }
    if (s.data.length !== t.data.length) fail(`tensor ${name} [${s.shape.join(', ')}] has no leading expert axis of ${E} to extend`);
    t.data.set(s.data);
  }
  return { model: out.train(model.training), sources };
}

/**
 * What trains after an extension of `oldExperts` experts: the new experts' slices of every
 * per-expert tensor and the new router rows (plus the old rows with trainOldRouterRows); every
 * other weight (old experts, attention, embeddings, norms, shared experts) stays frozen.
 */
export function extendTrainable(oldExperts: number, opts: { trainOldRouterRows?: boolean } = {}): (name: string, p: Parameter) => boolean | Uint8Array {
  return (name, p) => {
    if (!PER_EXPERT.test(name)) return false;
    const isRouter = name.includes('.router.');
    if (isRouter && opts.trainOldRouterRows) return true;
    const E = p.shape[0];
    if (E <= oldExperts) return false;
    const per = p.size / E;
    const mask = new Uint8Array(p.size);
    mask.fill(1, oldExperts * per);
    return mask;
  };
}
