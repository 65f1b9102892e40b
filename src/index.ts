/**
 * moe-ts, the library root (`import ... from 'moe-ts'`): tensors and autograd, modules, the MoE
 * layer with its registries, the transformer LM and its config, tokenizers, datasets, evaluation,
 * sampling and generation. It reaches no Node built-in, so it runs anywhere JavaScript does; the
 * js backend is active on import. File system, checkpoints, corpora, training runs and the
 * native/wasm backend loaders are in the Node entry, `moe-ts/node` (src/node.ts).
 * Every exported name is listed in docs/api.md.
 */
import './kernels/register-js.js';

export * from './tensor/index.js';
export * from './tensor/dtype.js';
export {
  z,
  ConfigError,
  num,
  posInt,
  nonNegInt,
  positive,
  nonNegative,
  bool,
  checkValue,
  parseOrThrow,
  formatIssues,
  describeShape,
  statement,
  type IssueFormat,
  type OptionDoc,
} from './tensor/validate.js';
export { JsBackend, refMatmul, refGroupedMatmul, refGroupedMatmulTN } from './kernels/js.js';
export * from './nn/index.js';
export * from './moe/index.js';
export * from './models/config.js';
export * from './models/transformer.js';
export * from './models/upcycle.js';
export * from './models/lora-experts.js';
export * from './models/prune.js';
export * from './models/extend.js';
export * from './models/merge.js';
export * from './models/attention/index.js';
export * from './models/time-moe.js';
export * from './models/ffn/index.js';
export * from './models/depth.js';
export * from './models/family.js';
export * from './models/build.js';
export * from './models/mamba.js';
export * from './models/all-mlp.js';
// names, not `export *`: these modules also hold Node-only loaders, exported from moe-ts/node
export { loadTokenizer, createStreamDecoder, ByteTokenizer, BpeTokenizer, GPT2_PATTERN, MAX_BPE_VOCAB } from './data/tokenizer/index.js';
export type { Tokenizer, TokenizerJSON, BpeJSON, BpeTrainOptions } from './data/tokenizer/index.js';
export { HfTokenizer, MAX_HF_VOCAB, BYTE_CHARS, CHAR_BYTES, byteLevelBpeFiles, DEFAULT_CHAT_TEMPLATE, DEFAULT_CHAT_STOP_TEXT } from './data/tokenizer/index.js';
export type { SpecialToken, SpecialTokens, HfTokenizerFiles, HfJSON, HfTokenizerOptions, HfEncodeOptions } from './data/tokenizer/index.js';
export { ChatSession, compileChatTemplate, renderChatTemplate, resolveChatTemplate } from './infer/chat.js';
export type { ChatMessage, ChatOptions, ChatReply, ChatTemplateOptions } from './infer/chat.js';
export * from './data/dataset.js';
export * from './train/evaluate.js';
export * from './infer/sampling.js';
export { DecodeEngine, type DecodeEngineOptions, type ExpertSource, type ExpertWeights, type WeightSource, type RoutingDropStats } from './infer/decode.js';
export { quantizedLoss, routingLoss, type QuantLoss, type RoutingLoss } from './infer/quality.js';
export * from './infer/steer.js';
export {
  quantizeMatrix,
  dequantizeMatrix,
  quantMatrixFromBlocks,
  quantizeRowsQ8,
  qmatmul,
  quantBytes,
  jsQuantKernels,
  QUANT_FORMATS,
  QBLOCK,
  QBLOCK_BYTES,
  type QuantFormat,
  type QuantMatrix,
  type Q8Rows,
  type PreparedMatrix,
  type QuantKernels,
  type QuantizeOptions,
} from './kernels/quant.js';
export {
  quantizeTernary,
  ternaryError,
  encodeTrits,
  decodeTrits,
  encodeTernary,
  decodeTernary,
  ternaryMatmul,
  ternaryShape,
  ternaryStats,
  huffmanLengths,
  TQE_MAX_CODE_LEN,
  type TernaryOptions,
  type TernaryRows,
  type TernaryStats,
} from './kernels/ternary.js';
export { generate, type GenerateOptions, type GenerateResult, type StopReason, type ContextOverflow, type InferenceModel } from './infer/generate.js';
