/** Basic layers: Linear, Embedding, RMSNorm, LayerNorm. */
import { Tensor } from '../tensor/tensor.js';
import { Rng } from '../tensor/random.js';
import { linear, embedding, rmsNorm, layerNorm } from '../tensor/index.js';
import { Module, Parameter, param } from './module.js';

export class Linear extends Module {
  /** [out, in], PyTorch's layout. */
  weight: Parameter;
  bias: Parameter | null;
  constructor(
    readonly inFeatures: number,
    readonly outFeatures: number,
    rng: Rng,
    opts: { bias?: boolean; std?: number } = {},
  ) {
    super();
    // default: N(0, 1/in) keeps activations unit-scale
    this.weight = param([outFeatures, inFeatures], { normal: opts.std ?? 1 / Math.sqrt(inFeatures) }, rng);
    this.bias = opts.bias ? param([outFeatures], 'zeros') : null;
  }
  forward(x: Tensor): Tensor {
    return linear(x, this.weight, this.bias);
  }
}

export class Embedding extends Module {
  weight: Parameter;
  constructor(
    readonly numEmbeddings: number,
    readonly dim: number,
    rng: Rng,
    std = 0.02,
  ) {
    super();
    this.weight = param([numEmbeddings, dim], { normal: std }, rng);
  }
  forward(ids: Int32Array, shape?: readonly number[]): Tensor {
    return embedding(this.weight, ids, shape);
  }
}

export class RMSNorm extends Module {
  weight: Parameter;
  constructor(
    readonly dim: number,
    readonly eps = 1e-6,
  ) {
    super();
    this.weight = param([dim], 'ones');
  }
  forward(x: Tensor): Tensor {
    return rmsNorm(x, this.weight, this.eps);
  }
}

export class LayerNorm extends Module {
  weight: Parameter;
  bias: Parameter;
  constructor(
    readonly dim: number,
    readonly eps = 1e-5,
  ) {
    super();
    this.weight = param([dim], 'ones');
    this.bias = param([dim], 'zeros');
  }
  forward(x: Tensor): Tensor {
    return layerNorm(x, this.weight, this.bias, this.eps);
  }
}
