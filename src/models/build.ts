/**
 * Building a model from its config: importing this module registers every model family, so
 * `buildModel` knows all model_type values (the transformer, MoE-Mamba, sparse all-MLP).
 */
import type { ModelConfig } from './config.js';
import { buildModelOfFamily, type LanguageModel } from './family.js';
import './transformer.js';
import './mamba.js';
import './all-mlp.js';

/** The model a config describes (its model_type's family), parameters initialised from `seed`. */
export function buildModel(config: ModelConfig, seed: number): LanguageModel {
  return buildModelOfFamily(config, seed);
}
