/**
 * moe-ts tokenizers <-> llama.cpp's `gpt2` (byte-level BPE) vocabulary metadata.
 * Tokens are written in GPT-2's byte-to-unicode form (every byte a printable character), ids
 * 0..255 the bytes, then one token per BPE merge (merges as "left right" token strings), then a
 * control token <|endoftext|> for BOS/EOS (llama.cpp needs one; moe-ts tokenizers have none, so
 * add_bos_token is false and the model never produces it on its own: its embedding row is zero).
 */
import { ByteTokenizer, BpeTokenizer, GPT2_PATTERN, type Tokenizer } from '../../data/tokenizer/index.js';
import { gguf, ggufArray, type GGUFValue } from './format.js';
import type { GGUFFile } from './reader.js';
import { GGUFError } from './reader.js';

export const EOS_TOKEN = '<|endoftext|>';
/** llama.cpp token types (llama_token_type). */
export const TOKEN_NORMAL = 1;
export const TOKEN_CONTROL = 3;

let byteToChar: string[] | null = null;
let charToByte: Map<string, number> | null = null;

/** GPT-2's bytes_to_unicode table: printable bytes map to themselves, the rest to U+0100 onwards. */
export function gpt2ByteChars(): string[] {
  if (!byteToChar) {
    const printable = (b: number): boolean => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    byteToChar = new Array<string>(256);
    let n = 0;
    for (let b = 0; b < 256; b++) byteToChar[b] = String.fromCodePoint(printable(b) ? b : 256 + n++);
    charToByte = new Map(byteToChar.map((c, b) => [c, b]));
  }
  return byteToChar;
}

export function tokenString(bytes: Uint8Array): string {
  const t = gpt2ByteChars();
  let s = '';
  for (const b of bytes) s += t[b];
  return s;
}

/** Inverse of tokenString; null when a character is not a GPT-2 byte character. */
export function tokenBytesOf(s: string): Uint8Array | null {
  gpt2ByteChars();
  const out: number[] = [];
  for (const ch of s) {
    const b = charToByte!.get(ch);
    if (b === undefined) return null;
    out.push(b);
  }
  return Uint8Array.from(out);
}

/** The tokenizer.ggml.* metadata for a moe-ts tokenizer; the vocabulary is tokenizer.vocabSize + 1 (EOS). */
export function tokenizerMetadata(tok: Tokenizer): { entries: [string, GGUFValue][]; vocab: number } {
  const json = tok.toJSON();
  let merges: string[] = [];
  if (json.type === 'bpe') {
    const bpe = tok as BpeTokenizer;
    if (bpe.pattern !== GPT2_PATTERN) {
      throw new Error(`gguf export: the BPE tokenizer's pre-tokenisation pattern is not GPT-2's, and llama.cpp's "gpt-2" pre-tokenizer would split text differently`);
    }
    merges = bpe.merges.map(([a, b]) => `${tokenString(tok.tokenBytes(a))} ${tokenString(tok.tokenBytes(b))}`);
  } else if (json.type !== 'byte') {
    throw new Error(`gguf export: tokenizer type "${json.type}" has no llama.cpp mapping (supported: byte, bpe)`);
  }
  const tokens: string[] = [];
  for (let i = 0; i < tok.vocabSize; i++) tokens.push(tokenString(tok.tokenBytes(i)));
  const eos = tokens.length;
  tokens.push(EOS_TOKEN);
  const types = tokens.map((_, i) => (i === eos ? TOKEN_CONTROL : TOKEN_NORMAL));
  return {
    vocab: tokens.length,
    entries: [
      ['tokenizer.ggml.model', gguf('string', 'gpt2')],
      ['tokenizer.ggml.pre', gguf('string', 'gpt-2')],
      ['tokenizer.ggml.tokens', ggufArray('string', tokens)],
      ['tokenizer.ggml.token_type', ggufArray('i32', types)],
      ['tokenizer.ggml.merges', ggufArray('string', merges)],
      ['tokenizer.ggml.bos_token_id', gguf('u32', eos)],
      ['tokenizer.ggml.eos_token_id', gguf('u32', eos)],
      ['tokenizer.ggml.add_bos_token', gguf('bool', false)],
      ['tokenizer.ggml.add_eos_token', gguf('bool', false)],
    ],
  };
}

/**
 * Rebuild a moe-ts tokenizer from a gpt2 vocabulary laid out as moe-ts writes it (256 byte
 * tokens in order, then one token per merge); trailing control tokens are dropped. Returns the
 * tokenizer and the number of leading (non-control) tokens the model keeps.
 */
export function tokenizerFromGGUF(f: GGUFFile): Tokenizer {
  const where = `gguf ${f.path}`;
  const model = f.getString('tokenizer.ggml.model');
  if (model !== 'gpt2') throw new GGUFError(`${where}: tokenizer.ggml.model is "${model}"; only byte-level "gpt2" vocabularies in moe-ts layout can be imported`);
  const tokens = f.getArray('tokenizer.ggml.tokens', 'string') as string[];
  const types = f.has('tokenizer.ggml.token_type') ? (f.getArray('tokenizer.ggml.token_type', 'i32') as number[]) : [];
  if (types.length && types.length !== tokens.length) throw new GGUFError(`${where}: tokenizer.ggml.token_type has ${types.length} entries for ${tokens.length} tokens`);
  let n = tokens.length;
  while (n > 0 && types[n - 1] === TOKEN_CONTROL) n--;
  if (n < 256) throw new GGUFError(`${where}: tokenizer.ggml.tokens has ${n} non-control tokens; a moe-ts vocabulary starts with the 256 byte tokens`);
  const chars = gpt2ByteChars();
  for (let b = 0; b < 256; b++) {
    if (tokens[b] !== chars[b])
      throw new GGUFError(`${where}: tokenizer.ggml.tokens[${b}] is ${JSON.stringify(tokens[b])}, expected byte ${b} (${JSON.stringify(chars[b])}): not a moe-ts byte/BPE vocabulary`);
  }
  const mergeStrs = f.has('tokenizer.ggml.merges') ? (f.getArray('tokenizer.ggml.merges', 'string') as string[]) : [];
  if (n === 256 && mergeStrs.length === 0) return new ByteTokenizer();
  if (mergeStrs.length !== n - 256) throw new GGUFError(`${where}: tokenizer.ggml.merges has ${mergeStrs.length} merges, but ${n - 256} tokens follow the bytes`);
  const ids = new Map<string, number>();
  tokens.slice(0, n).forEach((t, i) => ids.set(t, i));
  const merges: [number, number][] = mergeStrs.map((m, i) => {
    const parts = m.split(' ');
    const a = ids.get(parts[0]);
    const b = ids.get(parts[1]);
    if (parts.length !== 2 || a === undefined || b === undefined || parts[0] + parts[1] !== tokens[256 + i] || tokenBytesOf(tokens[256 + i]) === null) {
      throw new GGUFError(`${where}: tokenizer.ggml.merges[${i}] ${JSON.stringify(m)} does not build token ${256 + i} ${JSON.stringify(tokens[256 + i])}`);
    }
    return [a, b];
  });
  try {
    return new BpeTokenizer(merges);
  } catch (e) {
    throw new GGUFError(`${where}: ${(e as Error).message}`);
  }
}
