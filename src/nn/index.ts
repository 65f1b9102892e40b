/** The nn layer: modules with named parameters, basic layers, optimizers and schedules. */
export * from './module.js';
export * from './layers.js';
export * from './optim.js';
export * from './sparse.js';
