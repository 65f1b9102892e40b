/** The MoE layer's public surface: interfaces, registries, routers, losses, metrics, experts, dispatch, layer. */
export * from './types.js';
export * from './registry.js';
export * from './routers/registry.js';
export * from './routers/index.js';
export * from './losses/index.js';
export * from './metrics.js';
export * from './experts/index.js';
export * from './dispatch/index.js';
export * from './layer.js';
export * from './reference.js';
export * from './trace.js';
