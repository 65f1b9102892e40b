/**
 * Tensor storage and reverse-mode autograd.
 *
 * Compute tensors are contiguous row-major float32 (reshape is a zero-copy view; transposes
 * copy). Each op records its parents and a backward closure; `backward()` walks the graph in
 * reverse topological order (the tape) and accumulates gradients into `.grad`. Gradients of
 * leaves accumulate across calls until `zeroGrad`; intermediate gradients and the graph are freed.
 */
import { shapeSize, formatShape } from './shape.js';

let gradEnabled = true;

/** Run `fn` without recording the graph (inference, optimizer updates, metrics). */
export function noGrad<T>(fn: () => T): T {
  const prev = gradEnabled;
  gradEnabled = false;
  try {
    return fn();
  } finally {
    gradEnabled = prev;
  }
}

export function isGradEnabled(): boolean {
  return gradEnabled;
}

export type BackwardFn = (grad: Float32Array) => void;

let nextId = 1;

export class Tensor {
  readonly id = nextId++;
  data: Float32Array;
  readonly shape: readonly number[];
  /** Leaves with requiresGrad collect gradients; results inherit it from their parents. */
  requiresGrad: boolean;
  grad: Float32Array | null = null;
  /** Optional name (parameters use it for state dicts and error messages). */
  name?: string;
  /** Graph links; null for leaves and for results computed without grad. */
  parents: Tensor[] | null = null;
  backwardFn: BackwardFn | null = null;

  constructor(data: Float32Array, shape: readonly number[], requiresGrad = false) {
    const n = shapeSize(shape);
    if (data.length !== n) {
      throw new Error(`Tensor: data has ${data.length} elements but shape ${formatShape(shape)} needs ${n}`);
    }
    this.data = data;
    this.shape = Object.freeze(shape.slice());
    this.requiresGrad = requiresGrad;
  }

  get size(): number {
    return this.data.length;
  }

  get ndim(): number {
    return this.shape.length;
  }

  /** The single value of a one-element tensor. */
  item(): number {
    if (this.data.length !== 1) throw new Error(`item: tensor of shape ${formatShape(this.shape)} has ${this.data.length} elements, expected 1`);
    return this.data[0];
  }

  /** Same data, cut from the graph. */
  detach(): Tensor {
    return new Tensor(this.data, this.shape);
  }

  toString(): string {
    return `Tensor${formatShape(this.shape)}${this.requiresGrad ? ' (grad)' : ''}`;
  }

  /** Backpropagate from this tensor; a non-scalar needs an explicit output gradient. */
  backward(grad?: Float32Array): void {
    backward(this, grad);
  }
}

/** Build an op result, recording the graph only when some parent needs a gradient. */
export function result(data: Float32Array, shape: readonly number[], parents: Tensor[], backwardFn: BackwardFn): Tensor {
  const t = new Tensor(data, shape);
  if (gradEnabled && parents.some((p) => p.requiresGrad)) {
    t.requiresGrad = true;
    t.parents = parents;
    t.backwardFn = backwardFn;
  }
  return t;
}

/**
 * Add `g` into `t.grad`. `owned` means the caller hands over a fresh array that nobody else
 * references, so it can become the gradient buffer without a copy.
 */
export function accumulateGrad(t: Tensor, g: Float32Array, owned = false): void {
  if (!t.requiresGrad) return;
  if (g.length !== t.data.length) {
    throw new Error(`autograd: gradient of ${t.toString()} has ${g.length} elements, expected ${t.data.length}`);
  }
  if (t.grad === null) {
    t.grad = owned ? g : g.slice();
  } else {
    const a = t.grad;
    for (let i = 0; i < a.length; i++) a[i] += g[i];
  }
}

/**
 * Op results whose backward closure an earlier backward() already ran and dropped. Reaching one
 * again must be an error: it would otherwise look like a leaf and silently swallow the gradient
 * meant for everything beneath it (e.g. two losses sharing a subgraph, each with its own backward).
 */
const released = new WeakSet<Tensor>();

function checkNotReleased(t: Tensor): void {
  if (released.has(t)) {
    throw new Error(`backward: the graph through ${t.toString()} was already freed by an earlier backward(); ` + 'run the forward pass again, or add the losses and call backward() once');
  }
}

export function backward(root: Tensor, grad?: Float32Array): void {
  if (!root.requiresGrad) throw new Error(`backward: ${root.toString()} does not require grad (no parameter in its graph, or computed under noGrad)`);
  checkNotReleased(root);
  if (grad === undefined) {
    if (root.size !== 1) throw new Error(`backward: ${root.toString()} is not a scalar; pass the output gradient`);
    grad = new Float32Array([1]);
  }
  // iterative DFS topological order (deep graphs would overflow recursion)
  const order: Tensor[] = [];
  const visited = new Set<number>();
  const stack: [Tensor, number][] = [[root, 0]];
  visited.add(root.id);
  while (stack.length) {
    const top = stack[stack.length - 1];
    const [t, i] = top;
    const ps = t.parents;
    if (ps && i < ps.length) {
      top[1]++;
      const p = ps[i];
      if (p.requiresGrad && !visited.has(p.id)) {
        checkNotReleased(p);
        visited.add(p.id);
        stack.push([p, 0]);
      }
    } else {
      stack.pop();
      order.push(t);
    }
  }
  accumulateGrad(root, grad);
  for (let i = order.length - 1; i >= 0; i--) {
    const t = order[i];
    if (t.backwardFn && t.grad) {
      t.backwardFn(t.grad);
      // free the graph and intermediate gradients as we go
      t.grad = null;
      t.backwardFn = null;
      t.parents = null;
      released.add(t);
    }
  }
}

// ---------- creation ----------

export function tensor(values: ArrayLike<number> | Float32Array, shape?: readonly number[], requiresGrad = false): Tensor {
  const data = values instanceof Float32Array ? values : Float32Array.from(values);
  return new Tensor(data, shape ?? [data.length], requiresGrad);
}

export function scalar(v: number): Tensor {
  return new Tensor(new Float32Array([v]), []);
}

export function zeros(shape: readonly number[], requiresGrad = false): Tensor {
  return new Tensor(new Float32Array(shapeSize(shape)), shape, requiresGrad);
}

export function ones(shape: readonly number[], requiresGrad = false): Tensor {
  return full(shape, 1, requiresGrad);
}

export function full(shape: readonly number[], value: number, requiresGrad = false): Tensor {
  return new Tensor(new Float32Array(shapeSize(shape)).fill(value), shape, requiresGrad);
}
