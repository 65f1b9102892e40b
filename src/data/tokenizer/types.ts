/** The tokenizer interface shared by every tokenizer kind (byte, bpe, hf). */

/** the saved JSON form of any tokenizer: type, version, vocab_size and the kind's own fields */
export interface TokenizerJSON {
  type: string;
  version: number;
  vocab_size: number;
  [key: string]: unknown;
}

/** One special token: its id and its text (what a chat template writes for it). */
export interface SpecialToken {
  id: number;
  content: string;
}

/** The special tokens a tokenizer defines; byte and BPE tokenizers define none. */
export interface SpecialTokens {
  bos?: SpecialToken;
  eos?: SpecialToken;
  pad?: SpecialToken;
  unk?: SpecialToken;
  /** Ids that end a generated turn: eos plus any from generation_config.json. */
  stopIds: number[];
}

/** A tokenizer as the two Hugging Face files (parsed JSON objects). */
export interface HfTokenizerFiles {
  tokenizer: Record<string, unknown>;
  config: Record<string, unknown>;
}

export interface Tokenizer {
  /** Short description, e.g. "byte" or "bpe-512". */
  readonly name: string;
  /** Ids are in [0, vocabSize). */
  readonly vocabSize: number;
  /** addSpecialTokens: apply the tokenizer's post-processor (e.g. prepend <s>); byte and BPE have none. */
  encode(text: string, opts?: { addSpecialTokens?: boolean }): Int32Array;
  /** Invalid or split UTF-8 (e.g. a truncated multibyte character) decodes to U+FFFD, never throws. */
  decode(ids: ArrayLike<number>): string;
  /** The raw bytes of one token (for streaming decode and inspection). */
  tokenBytes(id: number): Uint8Array;
  /** Plain JSON; `loadTokenizer(tok.toJSON())` gives an identical tokenizer. */
  toJSON(): TokenizerJSON;
  /** Special tokens (Hugging Face tokenizers); absent for byte and BPE. */
  readonly special?: SpecialTokens;
  /** Jinja chat template (tokenizer_config.json's chat_template, or moe-ts's default for byte/BPE). */
  readonly chatTemplate?: string;
  /** tokenizer.json + tokenizer_config.json that @huggingface/tokenizers (and transformers) load. */
  toHuggingFace?(): HfTokenizerFiles;
}

export function checkId(id: number, vocabSize: number, index: number): void {
  if (!Number.isInteger(id) || id < 0 || id >= vocabSize) {
    throw new Error(`decode: token id ${id} at position ${index} is outside the vocabulary [0, ${vocabSize})`);
  }
}
