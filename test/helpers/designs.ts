/**
 * One tiny model config per design of issue 16 that builds a language model (keys start with the
 * item's number in the issue), shared by the cross-backend test (test/models/designs-backends.test.ts)
 * and the CLI training test (test/cli/designs-cli.test.ts). Each entry is merged over DESIGN_BASE; an
 * undefined value removes a base field (the non-transformer families have no attention heads).
 */
export const DESIGN_BASE = {
  hidden_size: 16,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  vocab_size: 32,
  max_position_embeddings: 16,
  num_local_experts: 4,
  num_experts_per_tok: 2,
  moe_intermediate_size: 16,
  intermediate_size: 32,
};

export const DESIGN_CONFIGS: Record<string, Record<string, unknown>> = {
  '1 mh-moe': { moe_sub_tokens: 2 },
  '2 peer': { ffn_type: 'peer', ffn_options: { numExperts: 256, heads: 2, topK: 4 } },
  '3 mumoe': { ffn_type: 'mumoe', ffn_options: { numExperts: 32 } },
  '4 mpoe': { expert_type: 'mpo' },
  '5 mone': { expert_type: 'nested', router_type: 'nested-budget', num_local_experts: 3, num_experts_per_tok: 1, router_options: { capacities: [0.5, 0.25, 0.25] } },
  '6 stratified': {
    ffn_type: 'stratified',
    ffn_options: {
      strata: [
        { experts: 2, dFF: 8 },
        { experts: 2, dFF: 24 },
      ],
    },
  },
  '6 heterogeneous stack': { moe_layer_overrides: { '0': { num_local_experts: 0 }, '1': { num_local_experts: 3, num_experts_per_tok: 1, expert_sizes: [8, 16, 24] } } },
  '7 moduleformer losses': { router_losses: { 'moduleformer-mi': 0.01, 'load-concentration': 0.001 } },
  '8 moa': { attention_type: 'moa', attention_options: { numExperts: 6, topK: 2 } },
  '9 switchhead, dense FFN': { attention_type: 'switchhead', num_attention_heads: 2, num_local_experts: 0 },
  '9 switchall': { attention_type: 'switchhead', num_attention_heads: 2 },
  '10 moh': { attention_type: 'moh', attention_options: { sharedHeads: 1, topK: 2 } },
  '11 mae': { attention_type: 'mae' },
  '12 jetmoe-moa': { attention_type: 'jetmoe-moa', num_key_value_heads: 2 },
  '13 mod (p-MoD schedule)': { num_hidden_layers: 3, mixture_of_depths: { capacity: 0.5, every: 1, schedule: 'shifted-cosine', weight: 'tanh' } },
  '13 γ-MoD router': { mixture_of_depths: { capacity: 0.5, every: 1, router: 'gamma' } },
  '15 moeut': { layer_groups: 1, norm_placement: 'peri', attention_type: 'switchhead', num_attention_heads: 2, router_type: 'sigma-moe' },
  '16 mamba-moe': { model_type: 'mamba-moe', num_attention_heads: undefined, family_options: { state_size: 4 } },
  '17 all-mlp': { model_type: 'all-mlp', num_attention_heads: undefined },
};

/** DESIGN_BASE with a design's fields over it (and `over` last); undefined values remove the field. */
export function designModel(extra: Record<string, unknown>, over: Record<string, unknown> = {}): Record<string, unknown> {
  const merged: Record<string, unknown> = { ...DESIGN_BASE, ...extra, ...over };
  for (const [k, v] of Object.entries(merged)) if (v === undefined) delete merged[k];
  return merged;
}
