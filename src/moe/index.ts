/** The MoE layer's public surface: interfaces, registries, routers, losses, metrics, experts, dispatch, layer (the float64 test oracle, reference.ts, is not part of it). */
export * from './types.js';
export * from './registry.js';
export * from './routers/registry.js';
export * from './routers/index.js';
export * from './losses/index.js';
export * from './metrics.js';
export * from './experts/index.js';
export * from './dispatch/index.js';
export * from './layer.js';
export * from './trace.js';
export * from './override.js';
export * from './reroute.js';
