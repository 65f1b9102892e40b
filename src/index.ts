/** moe-ts public API. Importing it registers the js backend; call initBackend() for a faster one. */
export * from './tensor/index.js';
export * from './kernels/index.js';
export * from './nn/index.js';
