/** GGUF (ggml / llama.cpp) files: reader, writer, ggml quantisation, moe-ts model export and import. */
export * from './format.js';
export { encodeTensor, decodeTensor, rowsFit } from './quant.js';
export { GGUFFile, GGUFError, withGGUF, isGGUFFile, type GGUFTensorInfo } from './reader.js';
export { serializeGGUF, writeGGUFSync, writeGGUFStreamSync, ggufLayout, type GGUFTensorInput, type GGUFTensorHeader } from './writer.js';
export { ARCHS, ARCH_NAMES, chooseArch, type ArchName, type ArchSpec } from './arch.js';
export { tokenizerMetadata, tokenizerFromGGUF, gpt2ByteChars, tokenString, EOS_TOKEN } from './tokenizer.js';
export {
  exportGGUF,
  fromGGUF,
  permuteRopeRows,
  GGUF_QUANTS,
  GGUF_IMPORT_ARCHS,
  type GGUFImportOptions,
  type GGUFQuant,
  type GGUFExportOptions,
  type GGUFExportReport,
  type GGUFModel,
} from './model.js';
