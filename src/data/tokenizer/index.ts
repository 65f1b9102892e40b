/** Tokenizer registry: load/save by JSON, plus streaming decode for generation. */
import * as fs from 'node:fs';
import { BpeTokenizer } from './bpe.js';
import { ByteTokenizer } from './byte.js';
import type { Tokenizer } from './types.js';

export type { Tokenizer, TokenizerJSON } from './types.js';
export { ByteTokenizer } from './byte.js';
export { BpeTokenizer, GPT2_PATTERN, MAX_BPE_VOCAB } from './bpe.js';
export type { BpeJSON, BpeTrainOptions } from './bpe.js';

const LOADERS: Record<string, (json: Record<string, unknown>) => Tokenizer> = {
  byte: (j) => ByteTokenizer.fromJSON(j),
  bpe: (j) => BpeTokenizer.fromJSON(j),
};

/** Build a tokenizer from its JSON (object or string); throws naming the bad field. */
export function loadTokenizer(json: unknown): Tokenizer {
  let obj = json;
  if (typeof json === 'string') {
    try {
      obj = JSON.parse(json);
    } catch (e) {
      throw new Error(`tokenizer JSON: not valid JSON: ${(e as Error).message}`);
    }
  }
  if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) throw new Error('tokenizer JSON: expected an object with a "type" field');
  const o = obj as Record<string, unknown>;
  if (typeof o.type !== 'string') throw new Error('tokenizer JSON: field type missing or not a string');
  if (!Object.prototype.hasOwnProperty.call(LOADERS, o.type)) {
    throw new Error(`tokenizer JSON: unknown type "${o.type}" (field type; known: ${Object.keys(LOADERS).join(', ')})`);
  }
  return LOADERS[o.type](o);
}

export function loadTokenizerFile(path: string): Tokenizer {
  let text: string;
  try {
    text = fs.readFileSync(path, 'utf8');
  } catch (e) {
    throw new Error(`tokenizer file ${path}: cannot read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  try {
    return loadTokenizer(text);
  } catch (e) {
    throw new Error(`tokenizer file ${path}: ${(e as Error).message}`);
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
