/**
 * moe-ts for browsers (the `browser` condition of the package's exports): the same library
 * minus what needs Node (file system, the native backend, worker_threads). Names are listed
 * where a module mixes both, so a bundler keeps none of the Node code; scripts/build-browser.mjs
 * fails the build if any Node built-in reaches the bundle. Run the engine in a dedicated Worker:
 * wasm kernel calls block (Atomics.wait), which the main thread may not.
 */
export * from './tensor/index.js';
export * from './tensor/dtype.js';
export { getBackend, setBackend } from './tensor/backend.js';
export { JsBackend, refMatmul, refGroupedMatmul, refGroupedMatmulTN } from './kernels/js.js';
export * from './kernels/browser.js';
export * from './nn/index.js';
export * from './moe/index.js';
export * from './models/config.js';
export * from './models/transformer.js';
export { loadTokenizer, createStreamDecoder, ByteTokenizer, BpeTokenizer, GPT2_PATTERN, MAX_BPE_VOCAB } from './data/tokenizer/index.js';
export type { Tokenizer, TokenizerJSON, BpeJSON, BpeTrainOptions } from './data/tokenizer/index.js';
export { firstInvalidUtf8, DOMAINS, domainNames, type DomainSpec, type DomainName } from './data/corpus.js';
export * from './data/dataset.js';
export { newTokenizer, buildDataset, sourceName } from './data/build.js';
export { SAFETENSORS_DTYPES, MAX_HEADER_BYTES, parseSafetensorsHeader, parseSafetensors, serializeSafetensors } from './io/safetensors.js';
export type { TensorEntry, SafetensorsFile, HeaderEntry, TensorMap } from './io/safetensors.js';
export * from './io/checkpoint-bytes.js';
export * from './infer/sampling.js';
export { generate, inferenceModelFromCheckpoint, type GenerateOptions, type GenerateResult, type StopReason, type ContextOverflow, type InferenceModel } from './infer/generate.js';
export * from './train/evaluate.js';
export * from './train/session.js';
