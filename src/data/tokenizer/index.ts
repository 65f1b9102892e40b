/** Tokenizer registry: load/save by JSON, plus streaming decode for generation. */
import { readRegularTextFileSync, FILE_LIMITS } from '../files.js';
import { oneLine, checkJsonDepth } from '../../tensor/validate.js';
import { BpeTokenizer } from './bpe.js';
import { ByteTokenizer } from './byte.js';
import { HfTokenizer } from './hf.js';
import type { Tokenizer } from './types.js';

export type { Tokenizer, TokenizerJSON, SpecialToken, SpecialTokens, HfTokenizerFiles } from './types.js';
export { ByteTokenizer } from './byte.js';
export { BpeTokenizer, GPT2_PATTERN, MAX_BPE_VOCAB, MAX_TOKEN_BYTES, MAX_VOCAB_BYTES } from './bpe.js';
export { checkSafePattern, UnsafePatternError, MAX_PATTERN_LENGTH, MAX_REPEATS } from './pattern.js';
export type { BpeJSON, BpeTrainOptions } from './bpe.js';
export { HfTokenizer, MAX_HF_VOCAB } from './hf.js';
export type { HfJSON, HfTokenizerOptions, HfEncodeOptions } from './hf.js';
export { BYTE_CHARS, CHAR_BYTES, byteLevelBpeFiles } from './byte-level.js';
export { DEFAULT_CHAT_TEMPLATE, DEFAULT_CHAT_STOP_TEXT } from './chat-template.js';

const LOADERS: Record<string, (json: Record<string, unknown>) => Tokenizer> = {
  byte: (j) => ByteTokenizer.fromJSON(j),
  bpe: (j) => BpeTokenizer.fromJSON(j),
  hf: (j) => HfTokenizer.fromJSON(j),
};

/** Build a tokenizer from its JSON (object or string); throws naming the bad field. */
export function loadTokenizer(json: unknown): Tokenizer {
  let obj = json;
  if (typeof json === 'string') {
    try {
      obj = JSON.parse(json);
    } catch (e) {
      throw new Error(`tokenizer JSON: not valid JSON: ${oneLine((e as Error).message)}`);
    }
  }
  checkJsonDepth(obj, 'tokenizer JSON');
  if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) throw new Error('tokenizer JSON: expected an object with a "type" field');
  const o = obj as Record<string, unknown>;
  if (typeof o.type !== 'string') throw new Error('tokenizer JSON: field type missing or not a string');
  if (!Object.prototype.hasOwnProperty.call(LOADERS, o.type)) {
    throw new Error(`tokenizer JSON: unknown type ${oneLine(JSON.stringify(o.type), 100)} (field type; known: ${Object.keys(LOADERS).join(', ')})`);
  }
  return LOADERS[o.type](o);
}

export function loadTokenizerFile(path: string): Tokenizer {
  const text = readRegularTextFileSync(path, { what: 'tokenizer file', maxBytes: FILE_LIMITS.tokenizer });
  try {
    return loadTokenizer(text);
  } catch (e) {
    throw new Error(`tokenizer file ${path}: ${oneLine((e as Error).message, 1000)}`);
  }
}

/**
 * Incremental decode for generation: a multibyte character split across tokens is held back
 * until complete, so concatenating the pushes equals decode(all ids).
 */
export function createStreamDecoder(tok: Tokenizer): { push(ids: ArrayLike<number> | number): string; flush(): string } {
  const dec = new TextDecoder('utf-8');
  return {
    push(ids) {
      const list = typeof ids === 'number' ? [ids] : ids;
      let out = '';
      for (let i = 0; i < list.length; i++) out += dec.decode(tok.tokenBytes(list[i]), { stream: true });
      return out;
    },
    flush() {
      return dec.decode();
    },
  };
}
