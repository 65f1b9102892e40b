/**
 * GPT-2's byte-to-unicode table (Radford et al., "Language Models are Unsupervised Multitask
 * Learners", 2019) and the export of byte-level vocabularies (moe-ts byte and BPE tokenizers) as a
 * Hugging Face tokenizer.json: a BPE model over those characters, ByteLevel pre-tokenizer and
 * decoder, so @huggingface/tokenizers and transformers give the same ids and the same text.
 */
import type { HfTokenizerFiles } from './types.js';
import { DEFAULT_CHAT_TEMPLATE } from './chat-template.js';

/** Byte b is the character BYTE_CHARS[b]: printable Latin-1 bytes map to themselves, the other 68 to U+0100.. in byte order. */
export const BYTE_CHARS: readonly string[] = (() => {
  const printable = (b: number): boolean => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  const out: string[] = [];
  let n = 0;
  for (let b = 0; b < 256; b++) out.push(String.fromCharCode(printable(b) ? b : 256 + n++));
  return out;
})();

/** The inverse of BYTE_CHARS. */
export const CHAR_BYTES: ReadonlyMap<string, number> = new Map(BYTE_CHARS.map((c, b) => [c, b]));

export function bytesToByteLevel(bytes: Uint8Array): string {
  let s = '';
  for (const b of bytes) s += BYTE_CHARS[b];
  return s;
}

/**
 * tokenizer.json + tokenizer_config.json for a byte-level vocabulary: `tokens[id]` are each
 * token's bytes, merge i (ids [a, b]) makes token 256 + i, and `pattern` (a regular expression,
 * or null for none) splits text before the merges. Ids are kept, so the exported tokenizer gives
 * exactly the moe-ts ids. Throws when two tokens have the same bytes (tokenizer.json maps token
 * text to one id).
 */
export function byteLevelBpeFiles(tokens: readonly Uint8Array[], merges: ReadonlyArray<readonly [number, number]>, pattern: string | null): HfTokenizerFiles {
  const vocab: Record<string, number> = {};
  const names: string[] = [];
  for (let id = 0; id < tokens.length; id++) {
    const s = bytesToByteLevel(tokens[id]);
    if (Object.prototype.hasOwnProperty.call(vocab, s)) {
      throw new Error(`tokenizer.json export: tokens ${vocab[s]} and ${id} have the same bytes ${JSON.stringify(s)}; tokenizer.json cannot give one text two ids`);
    }
    vocab[s] = id;
    names.push(s);
  }
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false };
  const preTokenizer =
    pattern === null
      ? byteLevel
      : { type: 'Sequence', pretokenizers: [{ type: 'Split', pattern: { Regex: pattern }, behavior: 'Isolated', invert: false }, byteLevel] };
  const tokenizer = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [],
    normalizer: null,
    pre_tokenizer: preTokenizer,
    post_processor: null,
    decoder: byteLevel,
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      // "a b" strings (the form every tokenizers version reads): byte-level characters are never a space
      merges: merges.map(([a, b]) => `${names[a]} ${names[b]}`),
    },
  };
  const config = {
    tokenizer_class: 'PreTrainedTokenizerFast',
    clean_up_tokenization_spaces: false,
    bos_token: null,
    eos_token: null,
    unk_token: null,
    pad_token: null,
    added_tokens_decoder: {},
    chat_template: DEFAULT_CHAT_TEMPLATE,
  };
  return { tokenizer, config };
}
