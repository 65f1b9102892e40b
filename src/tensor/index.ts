/** The tensor layer: storage, autograd, and differentiable ops. */
export * from './tensor.js';
export * from './shape.js';
export * from './backend.js';
export { Rng } from './random.js';
export { clearBufferPool } from './pool.js';
export * from './ops/elementwise.js';
export * from './ops/reduce.js';
export * from './ops/shape_ops.js';
export * from './ops/index_ops.js';
export * from './ops/matmul.js';
export * from './ops/nn_ops.js';
export * from './ops/moe_ops.js';
export * from './ops/router_ops.js';
export * from './ops/attention_ops.js';
export * from './ops/ssm_ops.js';
export * from './ops/token_mix_ops.js';
