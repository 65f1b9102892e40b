/** Tokenizer files: atomic save (loading lives with the tokenizers in data/tokenizer). */
import { writeJsonAtomicSync } from './atomic.js';
import type { Tokenizer, TokenizerJSON } from '../data/tokenizer/index.js';

/** Atomic JSON write of tok.toJSON(). */
export function saveTokenizer(path: string, tok: Tokenizer): void {
  writeJsonAtomicSync(path, tok.toJSON() as TokenizerJSON);
}
