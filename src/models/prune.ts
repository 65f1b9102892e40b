/**
 * Expert pruning as a model transform: keep the given experts of every MoE layer (the same number
 * in each, so the config stays uniform), slicing every per-expert tensor of the layer (experts,
 * router rows, per-expert biases) along its leading expert axis. Which experts to keep is the
 * caller's choice, e.g. the most used on calibration text (router statistics; cf. Lu et al.,
 * "Not All Experts are Equal: Efficient Expert Pruning and Skipping for Mixture-of-Experts LLMs", 2024).
 */
import { MoETransformerLM } from './transformer.js';
import { parseModelConfig, ConfigError } from './config.js';

/** A new model with only experts `keep[l]` (indices into the old layer) in MoE layer l (in moeLayers() order). */
export function pruneExperts(model: MoETransformerLM, keep: number[][]): MoETransformerLM {
  const c = model.config;
  const E = c.num_local_experts;
  const moe = model.layers.flatMap((l, i) => (l.block_sparse_moe ? [i] : []));
  if (moe.length === 0) throw new ConfigError('prune: the model has no MoE layers');
  if (keep.length !== moe.length) throw new ConfigError(`prune: keep needs one expert list per MoE layer (${moe.length}), got ${keep.length}`);
  const n = keep[0].length;
  keep.forEach((k, l) => {
    if (k.length !== n) throw new ConfigError(`prune: every MoE layer must keep the same number of experts (layer ${moe[l]} keeps ${k.length}, the first ${n})`);
    if (new Set(k).size !== k.length || k.some((e) => !Number.isInteger(e) || e < 0 || e >= E))
      throw new ConfigError(`prune: layer ${moe[l]} keep list must hold distinct experts in [0, ${E}), got [${k.join(', ')}]`);
  });
  if (n < 1) throw new ConfigError('prune: keep at least one expert per layer');
  if (c.expert_sizes) throw new ConfigError('prune: heterogeneous expert widths (expert_sizes) are not supported');
  if (c.moe_layer_overrides && Object.keys(c.moe_layer_overrides).length > 0) throw new ConfigError('prune: per-layer MoE sizes (moe_layer_overrides) are not supported');
  const cfg = parseModelConfig({ ...c, num_local_experts: n, num_experts_per_tok: Math.min(c.num_experts_per_tok, n) }, 'pruned model config');
  const out = new MoETransformerLM(cfg, 0);
  const src = model.stateDict();
  for (const [name, t] of out.stateDict()) {
    const s = src.get(name);
    if (!s) throw new ConfigError(`prune: tensor ${name} has no counterpart in the source model`);
    const layer = /^layers\.(\d+)\.block_sparse_moe\./.exec(name);
    const li = layer ? moe.indexOf(Number(layer[1])) : -1;
    const sliced = li >= 0 && !name.includes('.shared') && s.shape[0] === E && t.shape[0] === n;
    if (!sliced) {
      if (s.data.length !== t.data.length) throw new ConfigError(`prune: tensor ${name} [${s.shape.join(', ')}] has no leading expert axis to prune (router with per-expert state of another layout)`);
      t.data.set(s.data);
      continue;
    }
    const per = s.data.length / E;
    keep[li].forEach((e, j) => t.data.set(s.data.subarray(e * per, (e + 1) * per), j * per));
  }
  return out.train(model.training);
}
