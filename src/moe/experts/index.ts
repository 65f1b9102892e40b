/** The expert registry: expert types by config name. */
import type { Rng } from '../../tensor/random.js';
import { Registry } from '../registry.js';
import type { ExpertBank } from '../types.js';
import { FFNExperts, HeterogeneousExperts, type Activation, type ExpertInit } from './ffn.js';

export * from './ffn.js';

export interface ExpertConfig extends ExpertInit {
  numExperts: number;
  dModel: number;
  /** Width of every expert (ignored when `sizes` is given). */
  dFF: number;
  /** Per-expert widths for heterogeneous experts (HMoE); length numExperts. */
  sizes?: readonly number[];
}

export type ExpertFactory = (cfg: ExpertConfig, rng: Rng) => ExpertBank;

export const expertRegistry = new Registry<ExpertFactory>('expert type');

function ffnFactory(activation: Activation): ExpertFactory {
  return (cfg, rng) => {
    if (cfg.sizes !== undefined) {
      if (cfg.sizes.length !== cfg.numExperts) {
        throw new Error(`experts "${activation}": sizes has ${cfg.sizes.length} entries for numExperts ${cfg.numExperts}`);
      }
      return new HeterogeneousExperts(cfg.sizes, cfg.dModel, activation, rng, cfg);
    }
    return new FFNExperts(cfg.numExperts, cfg.dModel, cfg.dFF, activation, rng, cfg);
  };
}

expertRegistry.register('swiglu', ffnFactory('swiglu'), 'SwiGLU FFN experts (Shazeer 2020 "GLU Variants Improve Transformer")');
expertRegistry.register('gelu', ffnFactory('gelu'), 'GELU FFN experts (Hendrycks & Gimpel 2016 "Gaussian Error Linear Units")');
