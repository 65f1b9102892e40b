import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseRunConfig, type RunConfig } from '../../src/models/config.js';

export function tmpDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `moe-ts-${prefix}-`));
}

/** A tiny MoE run config for fast tests; `over` patches each section. */
export function tinyConfig(over: { model?: object; training?: object; data?: object } = {}): RunConfig {
  return parseRunConfig({
    model: {
      hidden_size: 32,
      num_hidden_layers: 2,
      num_attention_heads: 2,
      max_position_embeddings: 64,
      intermediate_size: 64,
      num_local_experts: 4,
      num_experts_per_tok: 2,
      moe_intermediate_size: 32,
      ...over.model,
    },
    training: { steps: 6, batch_size: 4, seq_len: 16, warmup_steps: 2, eval_interval: 3, eval_batches: 2, save_interval: 3, lr: 3e-3, ...over.training },
    data: { sources: ['shakespeare'], ...over.data },
  });
}

export function writeText(dir: string, name: string, text: string): string {
  const p = path.join(dir, name);
  fs.writeFileSync(p, text);
  return p;
}
