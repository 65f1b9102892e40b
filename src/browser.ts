/**
 * moe-ts for browsers (what the `browser` export condition maps `moe-ts` to, also `moe-ts/browser`):
 * the library root plus the wasm backend's Web Worker loader, checkpoints from bytes/Blob/URL,
 * in-memory training sessions, and the portable parts of modules that also hold Node file
 * functions (listed by name, so a bundler keeps none of the Node code; scripts/build-browser.mjs
 * fails the build if any Node built-in reaches the bundle). Run the engine in a dedicated Worker:
 * wasm kernel calls block (Atomics.wait), which the main thread may not.
 */
export * from './index.js';
export * from './kernels/browser.js';
export { firstInvalidUtf8, DOMAINS, domainNames, type DomainSpec, type DomainName } from './data/corpus.js';
export { newTokenizer, buildDataset, sourceName } from './data/build.js';
export { SAFETENSORS_DTYPES, MAX_HEADER_BYTES, parseSafetensorsHeader, parseSafetensors, serializeSafetensors } from './io/safetensors.js';
export type { TensorEntry, SafetensorsFile, HeaderEntry, TensorMap } from './io/safetensors.js';
export * from './io/checkpoint-bytes.js';
export * from './train/session.js';
export { inferenceModelFromCheckpoint } from './infer/generate.js';
