/** Modules own named parameters so models can be saved, loaded and optimized by name. */
// registers the js reference backend so anything built from modules computes without setup
import '../kernels/register-js.js';
import { Tensor } from '../tensor/tensor.js';
import { Rng } from '../tensor/random.js';
import { formatShape, shapeSize } from '../tensor/shape.js';

/** A trainable tensor (requiresGrad leaf). */
export class Parameter extends Tensor {
  constructor(data: Float32Array, shape: readonly number[]) {
    super(data, shape, true);
  }
}

export function param(shape: readonly number[], init: 'zeros' | 'ones' | { normal: number } | { uniform: number }, rng?: Rng): Parameter {
  const data = new Float32Array(shapeSize(shape));
  if (init === 'ones') data.fill(1);
  else if (init !== 'zeros') {
    if (!rng) throw new Error('param: random init needs an Rng (every random choice takes a seed)');
    if ('normal' in init) rng.fillNormal(data, init.normal);
    else rng.fillUniform(data, -init.uniform, init.uniform);
  }
  return new Parameter(data, shape);
}

/**
 * Non-trainable state that checkpoints must save (aux-loss-free routing biases, adaptive loss
 * coefficients, running statistics). Optimizers never see it; stateDict() includes it.
 */
export class StateBuffer {
  constructor(
    public data: Float32Array,
    readonly shape: readonly number[],
  ) {
    if (data.length !== shapeSize(shape)) throw new Error(`StateBuffer: ${data.length} values for shape ${formatShape(shape)}`);
  }
}

export type StateDict = Map<string, { data: Float32Array; shape: readonly number[] }>;

export abstract class Module {
  /** Training mode (dropout, noisy gating, bias updates); switch with train()/eval(). */
  training = true;

  /** Own parameters and submodules, discovered from instance fields (arrays of modules too). */
  namedChildren(): [string, Module][] {
    const out: [string, Module][] = [];
    for (const [k, v] of Object.entries(this)) {
      if (v instanceof Module) out.push([k, v]);
      else if (Array.isArray(v)) v.forEach((m, i) => m instanceof Module && out.push([`${k}.${i}`, m]));
    }
    return out;
  }

  ownParameters(): [string, Parameter][] {
    const out: [string, Parameter][] = [];
    for (const [k, v] of Object.entries(this)) if (v instanceof Parameter) out.push([k, v]);
    return out;
  }

  ownBuffers(): [string, StateBuffer][] {
    const out: [string, StateBuffer][] = [];
    for (const [k, v] of Object.entries(this)) if (v instanceof StateBuffer) out.push([k, v]);
    return out;
  }

  /** All state buffers with dotted names. */
  namedBuffers(prefix = ''): [string, StateBuffer][] {
    const out: [string, StateBuffer][] = [];
    for (const [k, b] of this.ownBuffers()) out.push([prefix + k, b]);
    for (const [k, m] of this.namedChildren()) out.push(...m.namedBuffers(`${prefix}${k}.`));
    return out;
  }

  /** All parameters with dotted names, in a deterministic order. */
  namedParameters(prefix = ''): [string, Parameter][] {
    const out: [string, Parameter][] = [];
    for (const [k, p] of this.ownParameters()) out.push([prefix + k, p]);
    for (const [k, m] of this.namedChildren()) out.push(...m.namedParameters(`${prefix}${k}.`));
    return out;
  }

  parameters(): Parameter[] {
    return this.namedParameters().map(([, p]) => p);
  }

  numParameters(): number {
    return this.parameters().reduce((s, p) => s + p.size, 0);
  }

  zeroGrad(): void {
    for (const p of this.parameters()) {
      p.grad = null;
      // row-sparse parameters (src/nn/sparse.ts) keep their gradient beside .grad
      if ('rowGrad' in p) (p as { rowGrad: unknown }).rowGrad = null;
    }
  }

  train(on = true): this {
    this.training = on;
    for (const [, m] of this.namedChildren()) m.train(on);
    return this;
  }

  eval(): this {
    return this.train(false);
  }

  /** Parameters and buffers by name (the tensors a checkpoint holds). */
  stateDict(): StateDict {
    return new Map<string, { data: Float32Array; shape: readonly number[] }>([...this.namedParameters(), ...this.namedBuffers()]);
  }

  /** Copy values in by name; every parameter and buffer must be present with the same shape, and no extras. */
  loadStateDict(state: StateDict): void {
    const params = this.stateDict();
    for (const name of state.keys()) {
      if (!params.has(name)) throw new Error(`loadStateDict: unexpected tensor "${name}" (not a parameter of this model)`);
    }
    for (const [name, p] of params) {
      const src = state.get(name);
      if (!src) throw new Error(`loadStateDict: missing tensor "${name}" of shape ${formatShape(p.shape)}`);
      if (src.shape.length !== p.shape.length || src.shape.some((d, i) => d !== p.shape[i])) {
        throw new Error(`loadStateDict: "${name}" has shape ${formatShape(src.shape)}, expected ${formatShape(p.shape)}`);
      }
      p.data.set(src.data);
    }
  }
}
