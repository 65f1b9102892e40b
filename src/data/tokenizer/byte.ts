/** Byte-level tokenizer: one token per UTF-8 byte, vocabulary 256, nothing to train. */
import { checkId, HfTokenizerFiles, Tokenizer, TokenizerJSON } from './types.js';
import { byteLevelBpeFiles } from './byte-level.js';
import { DEFAULT_CHAT_TEMPLATE } from './chat-template.js';

const encoder = new TextEncoder();

export class ByteTokenizer implements Tokenizer {
  readonly name = 'byte';
  readonly vocabSize = 256;
  readonly chatTemplate = DEFAULT_CHAT_TEMPLATE;
  private readonly single: Uint8Array[] = Array.from({ length: 256 }, (_, i) => Uint8Array.of(i));

  encode(text: string): Int32Array {
    return Int32Array.from(encoder.encode(text));
  }

  decode(ids: ArrayLike<number>): string {
    const bytes = new Uint8Array(ids.length);
    for (let i = 0; i < ids.length; i++) {
      checkId(ids[i], 256, i);
      bytes[i] = ids[i];
    }
    // non-fatal: a window cut through a multibyte character yields U+FFFD instead of throwing
    return new TextDecoder('utf-8').decode(bytes);
  }

  tokenBytes(id: number): Uint8Array {
    checkId(id, 256, 0);
    return this.single[id];
  }

  /** A byte-level BPE tokenizer.json with no merges: token i is byte i. */
  toHuggingFace(): HfTokenizerFiles {
    return byteLevelBpeFiles(this.single, [], null);
  }

  toJSON(): TokenizerJSON {
    return { type: 'byte', version: 1, vocab_size: 256 };
  }

  static fromJSON(json: Record<string, unknown>): ByteTokenizer {
    if (json.version !== 1) throw new Error(`tokenizer JSON: field version must be 1 for type "byte", got ${JSON.stringify(json.version)}`);
    if (json.vocab_size !== undefined && json.vocab_size !== 256) {
      throw new Error(`tokenizer JSON: field vocab_size must be 256 for type "byte", got ${JSON.stringify(json.vocab_size)}`);
    }
    return new ByteTokenizer();
  }
}
