/** The tokenizer interface shared by every tokenizer kind (byte, bpe). */

export interface TokenizerJSON {
  type: string;
  version: number;
  vocab_size: number;
  [key: string]: unknown;
}

export interface Tokenizer {
  /** Short description, e.g. "byte" or "bpe-512". */
  readonly name: string;
  /** Ids are in [0, vocabSize). */
  readonly vocabSize: number;
  encode(text: string): Int32Array;
  /** Invalid or split UTF-8 (e.g. a truncated multibyte character) decodes to U+FFFD, never throws. */
  decode(ids: ArrayLike<number>): string;
  /** The raw bytes of one token (for streaming decode and inspection). */
  tokenBytes(id: number): Uint8Array;
  /** Plain JSON; `loadTokenizer(tok.toJSON())` gives an identical tokenizer. */
  toJSON(): TokenizerJSON;
}

export function checkId(id: number, vocabSize: number, index: number): void {
  if (!Number.isInteger(id) || id < 0 || id >= vocabSize) {
    throw new Error(`decode: token id ${id} at position ${index} is outside the vocabulary [0, ${vocabSize})`);
  }
}
