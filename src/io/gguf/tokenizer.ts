/**
 * moe-ts tokenizers <-> llama.cpp's `gpt2` (byte-level BPE) vocabulary metadata.
 * Tokens are written in GPT-2's byte-to-unicode form (every byte a printable character), ids
 * 0..255 the bytes, then one token per BPE merge (merges as "left right" token strings), then a
 * control token <|endoftext|> for BOS/EOS (llama.cpp needs one; moe-ts tokenizers have none, so
 * add_bos_token is false and the model never produces it on its own: its embedding row is zero).
 */
import { ByteTokenizer, BpeTokenizer, HfTokenizer, GPT2_PATTERN, type Tokenizer } from '../../data/tokenizer/index.js';
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

export const TOKEN_USER_DEFINED = 4;
export const TOKEN_UNUSED = 5;
/** The GGUF key for the whole tokenizer as JSON (GGUF spec); moe-ts stores its saved HfTokenizer form there. */
export const HF_JSON_KEY = 'tokenizer.huggingface.json';

const QWEN2_PATTERN = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const LLAMA3_PATTERN = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
/** Split regexes of Hugging Face byte-level tokenizers -> llama.cpp's pre-tokenizer of the same split. */
const PRE_BY_PATTERN = new Map([
  [QWEN2_PATTERN, 'qwen2'],
  [LLAMA3_PATTERN, 'llama-bpe'],
]);

type Obj = Record<string, unknown>;
const isObj = (x: unknown): x is Obj => typeof x === 'object' && x !== null && !Array.isArray(x);

/** llama.cpp's pre-tokenizer name for a byte-level BPE tokenizer.json, or why none fits. */
function hfPreTokenizer(tj: Obj): string {
  const fail = (why: string): never => {
    throw new Error(`gguf export: Hugging Face tokenizer: ${why}; llama.cpp would split text differently (supported: byte-level BPE with GPT-2's, Qwen2's or Llama-3's split)`);
  };
  const pre = tj.pre_tokenizer;
  const parts = isObj(pre) && pre.type === 'Sequence' && Array.isArray(pre.pretokenizers) ? (pre.pretokenizers as unknown[]) : [pre];
  const bl = parts.find((p) => isObj(p) && p.type === 'ByteLevel') as Obj | undefined;
  if (!bl) fail(`pre_tokenizer ${JSON.stringify(pre)?.slice(0, 80)} is not byte-level`);
  if (bl!.add_prefix_space === true) fail('ByteLevel add_prefix_space is true');
  const splits = parts.filter((p) => isObj(p) && p.type === 'Split') as Obj[];
  if (splits.length === 0) {
    if (bl!.use_regex === false) fail('ByteLevel without a split regex');
    return 'gpt-2';
  }
  const pattern = splits.length === 1 && isObj(splits[0].pattern) ? (splits[0].pattern as Obj).Regex : undefined;
  const name = typeof pattern === 'string' ? PRE_BY_PATTERN.get(pattern) : undefined;
  if (!name) fail(`split pattern ${JSON.stringify(pattern ?? splits.map((x) => x.pattern)).slice(0, 120)} has no llama.cpp pre-tokenizer here`);
  return name!;
}

/** gpt2-model metadata for a byte-level BPE Hugging Face tokenizer (ids as in tokenizer.json; the saved form kept under HF_JSON_KEY). */
function hfTokenizerMetadata(tok: HfTokenizer): { entries: [string, GGUFValue][]; vocab: number } {
  const json = tok.toJSON();
  const tj = json.tokenizer;
  const model = isObj(tj.model) ? tj.model : {};
  if (model.type !== 'BPE' || model.byte_fallback === true) {
    throw new Error(
      `gguf export: Hugging Face tokenizer model ${JSON.stringify(model.type)}${model.byte_fallback ? ' with byte_fallback' : ''} has no llama.cpp mapping here (supported: byte-level BPE; SentencePiece-style vocabularies are not written yet)`,
    );
  }
  const norm = tj.normalizer;
  if (norm !== null && norm !== undefined && !(isObj(norm) && norm.type === 'NFC'))
    throw new Error(`gguf export: Hugging Face tokenizer normalizer ${JSON.stringify(norm).slice(0, 80)} has no llama.cpp mapping`);
  const pre = hfPreTokenizer(tj);
  const vocabById = new Map<number, string>();
  if (isObj(model.vocab)) for (const [t, id] of Object.entries(model.vocab)) if (typeof id === 'number') vocabById.set(id, t);
  const added = new Map(((tj.added_tokens as Obj[] | undefined) ?? []).map((a) => [a.id as number, a]));
  const tokens: string[] = [];
  const types: number[] = [];
  for (let i = 0; i < tok.vocabSize; i++) {
    const a = added.get(i);
    const t = a ? (a.content as string) : vocabById.get(i);
    tokens.push(t ?? `[PAD${i}]`);
    types.push(a ? (a.special ? TOKEN_CONTROL : TOKEN_USER_DEFINED) : t === undefined ? TOKEN_UNUSED : TOKEN_NORMAL);
  }
  const merges = ((model.merges as unknown[] | undefined) ?? []).map((m) => (Array.isArray(m) ? m.join(' ') : String(m)));
  const cfg = json.config;
  const idOf = (k: string): number | undefined => {
    const v = cfg[k];
    const s = typeof v === 'string' ? v : isObj(v) && typeof v.content === 'string' ? v.content : undefined;
    const i = s === undefined ? -1 : tokens.indexOf(s);
    return i >= 0 ? i : undefined;
  };
  const eos = idOf('eos_token') ?? (tokens.includes(EOS_TOKEN) ? tokens.indexOf(EOS_TOKEN) : undefined);
  const bos = idOf('bos_token') ?? eos;
  const entries: [string, GGUFValue][] = [
    ['tokenizer.ggml.model', gguf('string', 'gpt2')],
    ['tokenizer.ggml.pre', gguf('string', pre)],
    ['tokenizer.ggml.tokens', ggufArray('string', tokens)],
    ['tokenizer.ggml.token_type', ggufArray('i32', types)],
    ['tokenizer.ggml.merges', ggufArray('string', merges)],
    ['tokenizer.ggml.add_bos_token', gguf('bool', cfg.add_bos_token === true)],
    ['tokenizer.ggml.add_eos_token', gguf('bool', false)],
    [HF_JSON_KEY, gguf('string', JSON.stringify(json))],
  ];
  if (eos !== undefined) entries.push(['tokenizer.ggml.eos_token_id', gguf('u32', eos)]);
  if (bos !== undefined) entries.push(['tokenizer.ggml.bos_token_id', gguf('u32', bos)]);
  if (typeof cfg.chat_template === 'string') entries.push(['tokenizer.chat_template', gguf('string', cfg.chat_template)]);
  return { entries, vocab: tokens.length };
}

/**
 * The tokenizer.ggml.* metadata for a tokenizer: moe-ts byte/BPE ones have vocabulary
 * tokenizer.vocabSize + 1 (EOS); Hugging Face byte-level BPE ones keep their ids.
 */
export function tokenizerMetadata(tok: Tokenizer): { entries: [string, GGUFValue][]; vocab: number } {
  if (tok instanceof HfTokenizer) return hfTokenizerMetadata(tok);
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
  if (f.has(HF_JSON_KEY)) {
    // the whole Hugging Face tokenizer, as moe-ts (the saved form) or another converter (tokenizer.json itself) stored it
    let j: unknown;
    try {
      j = JSON.parse(f.getString(HF_JSON_KEY));
    } catch (e) {
      throw new GGUFError(`${where}: ${HF_JSON_KEY} is not valid JSON: ${(e as Error).message}`);
    }
    try {
      if (!isObj(j)) throw new Error('not a JSON object');
      const tok = j.type === 'hf' ? HfTokenizer.fromJSON(j) : new HfTokenizer({ tokenizer: j, config: {} }, { tokenizerSource: HF_JSON_KEY });
      const n = f.getArray('tokenizer.ggml.tokens', 'string').length;
      if (tok.vocabSize > n) throw new Error(`has ${tok.vocabSize} ids but tokenizer.ggml.tokens has ${n}`);
      return tok;
    } catch (e) {
      throw new GGUFError(`${where}: ${HF_JSON_KEY}: ${(e as Error).message}`);
    }
  }
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
