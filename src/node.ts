/**
 * moe-ts for Node (`import ... from 'moe-ts/node'`): everything of the library root plus what
 * needs Node: the backend loaders (native onnxruntime GEMM, wasm on worker threads), corpora and
 * run data from disk, safetensors and checkpoint files, atomic writes, tokenizer files, training
 * runs, and loading a checkpoint for inference. Every exported name is listed in docs/api.md.
 */
export * from './index.js';
export { initBackend, createBackend, disposeBackend, BACKEND_NAMES, type BackendName, type BackendOptions } from './kernels/index.js';
export { loadTokenizerFile } from './data/tokenizer/index.js';
export * from './data/corpus.js';
export * from './data/build.js';
export * from './io/safetensors.js';
export * from './io/atomic.js';
export * from './io/tokenizer.js';
export * from './io/hf-tokenizer.js';
export * from './io/checkpoint.js';
export * from './train/trainer.js';
export { loadModelForInference } from './infer/generate.js';
export { WasmQuantKernels } from './kernels/wasm/quant.js';
export * from './io/safetensors-index.js';
export * from './io/quant.js';
export {
  fromPretrained,
  savePretrained,
  fromPretrainedWithTokenizer,
  savePretrainedWithTokenizer,
  modelConfigFromHf,
  HfFormatError,
  type PretrainedModel,
  type FromPretrainedOptions,
  type SavePretrainedOptions,
  type HfExpertMatrix,
  type HfExpertLayer,
} from './io/hf/pretrained.js';
export { ARCHS as HF_ARCHITECTURES, archForModel, type ArchSpec } from './io/hf/archs.js';
export * from './io/checkpoint-bytes.js';
export * from './train/session.js';
export * from './data/series.js';
export * from './train/forecast.js';
export { renderForecastReport, writeForecastReport, forecastTable, formatForecastTable } from './bench-routers/report/forecast-report.js';
export { inferenceModelFromCheckpoint } from './infer/generate.js';
export {
  FileExperts,
  openGGUFEngine,
  openHfEngine,
  ggufWeightSource,
  offloadHitRate,
  formatOffloadStats,
  type OffloadStats,
  type FileExpertsOptions,
  type GGUFEngineOptions,
  type GGUFEngine,
  type HfEngineOptions,
  type HfEngine,
} from './infer/offload.js';
export * from './adapt/common.js';
export * from './adapt/upcycle.js';
export * from './adapt/peft.js';
export * from './adapt/prune.js';
export * from './adapt/extend.js';
export * from './adapt/merge.js';
export * from './adapt/distill.js';
export * from './train/distill.js';
export * from './adapt/quantize-experts.js';
export * from './adapt/analyze.js';
export * from './adapt/reroute.js';
export {
  exportGGUF,
  fromGGUF,
  GGUF_QUANTS,
  GGUF_IMPORT_ARCHS,
  GGUFFile,
  GGUFError,
  withGGUF,
  isGGUFFile,
  writeGGUFSync,
  serializeGGUF,
  gguf,
  ggufArray,
  encodeTensor as encodeGGMLTensor,
  decodeTensor as decodeGGMLTensor,
  ARCHS as GGUF_ARCHITECTURES,
  ARCH_NAMES as GGUF_ARCH_NAMES,
  chooseArch as chooseGGUFArch,
  tokenizerMetadata as ggufTokenizerMetadata,
  tokenizerFromGGUF,
  type GGUFQuant,
  type GGUFExportOptions,
  type GGUFExportReport,
  type GGUFModel,
  type GGUFTensorInfo,
  type GGUFTensorInput,
  type GGUFValue,
  type ArchName as GGUFArchName,
  type ArchSpec as GGUFArchSpec,
} from './io/gguf/index.js';
