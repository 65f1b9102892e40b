/** moe-ts public API. Importing it registers the js backend; call initBackend() for a faster one. */
export * from './tensor/index.js';
export * from './kernels/index.js';
export * from './nn/index.js';
export * from './moe/index.js';
export * from './models/config.js';
export * from './models/transformer.js';
export * from './data/tokenizer/index.js';
export * from './data/corpus.js';
export * from './data/dataset.js';
export * from './io/safetensors.js';
export * from './io/atomic.js';
export * from './tensor/dtype.js';
export * from './train/trainer.js';
export * from './train/evaluate.js';
export * from './train/checkpoint.js';
export * from './infer/index.js';
