import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseRunConfig, type RunConfig } from '../../src/models/config.js';
import { MoETransformerLM } from '../../src/models/transformer.js';
import { ByteTokenizer } from '../../src/data/tokenizer/index.js';
import { saveModelRun } from '../../src/adapt/common.js';

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

/**
 * A tiny untrained MoE saved as a run in `dir/base` (byte tokenizer, init seed 4), with a config
 * file `dir/cfg.json` holding its training section plus `extra`: the base of CLI tests that pass
 * `--config cfg.json --model base`.
 */
export function saveTinyBaseRun(dir: string, opts: { layers?: number; interval?: number; extra?: object } = {}) {
  const iv = opts.interval ?? 3;
  const cfg = parseRunConfig({
    model: {
      vocab_size: 256,
      hidden_size: 16,
      num_hidden_layers: opts.layers ?? 2,
      num_attention_heads: 2,
      max_position_embeddings: 32,
      num_local_experts: 4,
      num_experts_per_tok: 2,
      moe_intermediate_size: 16,
    },
    training: { batch_size: 2, seq_len: 16, eval_batches: 1, eval_interval: iv, save_interval: iv, warmup_steps: 1, lr: 1e-2 },
  });
  const baseDir = path.join(dir, 'base');
  const base = new MoETransformerLM(cfg.model, 4);
  saveModelRun(baseDir, base, new ByteTokenizer(), cfg);
  const cfgFile = path.join(dir, 'cfg.json');
  fs.writeFileSync(cfgFile, JSON.stringify({ training: cfg.training, ...opts.extra }));
  return { cfg, base, baseDir, cfgFile };
}
