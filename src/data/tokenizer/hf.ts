/**
 * Hugging Face tokenizers (tokenizer.json + tokenizer_config.json) behind the moe-ts Tokenizer
 * interface, encoding and decoding through @huggingface/tokenizers (the tokenizer of
 * transformers.js). No file system here: it takes the parsed JSON objects (io/hf-tokenizer.ts
 * reads the files). For streaming, each token's bytes are derived from its vocabulary text
 * through the decoder chain (byte-level characters, ▁ for space, <0xNN> byte fallback), so the
 * stream of a continuation concatenates to what decode gives for the whole sequence.
 */
import { Tokenizer as HfLibTokenizer } from '@huggingface/tokenizers';
import { isRecord } from '../../tensor/validate.js';
import { checkId, type HfTokenizerFiles, type SpecialToken, type SpecialTokens, type Tokenizer, type TokenizerJSON } from './types.js';
import { CHAR_BYTES } from './byte-level.js';

/** Largest vocabulary accepted (ids are < this); bounds the per-id tables. */
export const MAX_HF_VOCAB = 1 << 22;

/** the saved form of a Hugging Face tokenizer (both files' objects), as a checkpoint stores it */
export interface HfJSON extends TokenizerJSON {
  type: 'hf';
  version: 1;
  tokenizer: Record<string, unknown>;
  config: Record<string, unknown>;
  /** Extra ids that end a turn (generation_config.json's eos_token_id). */
  stop_ids?: number[];
}

/** file names for errors and extra stop ids of an HfTokenizer */
export interface HfTokenizerOptions {
  /** Names the files in errors (default "tokenizer.json" / "tokenizer_config.json"). */
  tokenizerSource?: string;
  configSource?: string;
  /** Ids that also end a generated turn, e.g. from generation_config.json. */
  extraStopIds?: number[];
}

/** encode options of an HfTokenizer (special tokens) */
export interface HfEncodeOptions {
  /** Apply the post-processor (e.g. prepend <s>), as transformers does by default. Default false. */
  addSpecialTokens?: boolean;
}

const utf8 = new TextEncoder();
const BYTE_FALLBACK = /^<0x([0-9A-Fa-f]{2})>$/;

function checkTokenId(id: unknown, where: string): number {
  if (typeof id !== 'number' || !Number.isInteger(id) || id < 0 || id >= MAX_HF_VOCAB) {
    throw new Error(`${where} must be an integer id in [0, ${MAX_HF_VOCAB}), got ${JSON.stringify(id)}`);
  }
  return id;
}

/** Largest id in tokenizer.json (model vocabulary and added tokens), validating each. */
function maxId(tj: Record<string, unknown>, src: string): number {
  const model = tj.model as Record<string, unknown>;
  let max = -1;
  const vocab = model.vocab;
  if (model.type === 'Unigram') {
    if (!Array.isArray(vocab)) throw new Error(`${src}: field model.vocab must be an array of [piece, score] for a Unigram model`);
    vocab.forEach((e, i) => {
      if (!Array.isArray(e) || typeof e[0] !== 'string' || typeof e[1] !== 'number') throw new Error(`${src}: field model.vocab[${i}] must be [piece, score], got ${JSON.stringify(e)}`);
    });
    max = vocab.length - 1;
    if (vocab.length > MAX_HF_VOCAB) throw new Error(`${src}: field model.vocab has ${vocab.length} entries, more than ${MAX_HF_VOCAB}`);
  } else {
    if (!isRecord(vocab)) throw new Error(`${src}: field model.vocab must be an object mapping token text to id`);
    for (const [k, v] of Object.entries(vocab)) max = Math.max(max, checkTokenId(v, `${src}: field model.vocab[${JSON.stringify(k)}]`));
  }
  const added = tj.added_tokens ?? [];
  if (!Array.isArray(added)) throw new Error(`${src}: field added_tokens must be an array`);
  added.forEach((t, i) => {
    if (!isRecord(t) || typeof t.content !== 'string') throw new Error(`${src}: field added_tokens[${i}] must be an object with a string content`);
    max = Math.max(max, checkTokenId(t.id, `${src}: field added_tokens[${i}].id`));
  });
  if (max < 0) throw new Error(`${src}: the vocabulary is empty`);
  return max;
}

/** tokenizer_config.json's token fields are a string, an AddedToken object {content, ...}, or null. */
function tokenContent(v: unknown, field: string, src: string): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v === 'string') return v;
  if (isRecord(v) && typeof v.content === 'string') return v.content;
  throw new Error(`${src}: field ${field} must be a string or {"content": ...}, got ${JSON.stringify(v)}`);
}

/** chat_template is a string or a list of {name, template}; the one named "default" (else the first) is used. */
function pickTemplate(v: unknown, src: string): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v === 'string') return v;
  if (Array.isArray(v) && v.every((t) => isRecord(t) && typeof t.name === 'string' && typeof t.template === 'string')) {
    const list = v as { name: string; template: string }[];
    return (list.find((t) => t.name === 'default') ?? list[0])?.template;
  }
  throw new Error(`${src}: field chat_template must be a string or a list of {"name", "template"}`);
}

type Piece = string | Uint8Array;

/**
 * One token through the decoder chain, without the context-dependent parts (the strip of the
 * first token's leading space, joins across tokens): the bytes it adds after earlier tokens.
 */
function decodePiece(cfg: unknown, piece: Piece, added: boolean, state: { fused: boolean }): Piece {
  if (!isRecord(cfg)) return piece;
  if (cfg.type === 'Sequence') {
    for (const d of (cfg.decoders as unknown[]) ?? []) piece = decodePiece(d, piece, added, state);
    return piece;
  }
  if (typeof piece !== 'string') return piece;
  switch (cfg.type) {
    case 'ByteLevel': {
      if (added) return piece; // added tokens pass through as their text
      const out: number[] = [];
      for (const c of piece) {
        const b = CHAR_BYTES.get(c);
        if (b === undefined) out.push(...utf8.encode(c));
        else out.push(b);
      }
      return Uint8Array.from(out);
    }
    case 'Metaspace':
      return piece.replaceAll(typeof cfg.replacement === 'string' ? cfg.replacement : '\u2581', ' ');
    case 'Replace': {
      const pat = cfg.pattern as { String?: string; Regex?: string } | undefined;
      const content = typeof cfg.content === 'string' ? cfg.content : '';
      if (pat?.String !== undefined) return piece.replaceAll(pat.String, content);
      if (pat?.Regex !== undefined) return piece.replace(new RegExp(pat.Regex, 'gu'), content);
      return piece;
    }
    case 'ByteFallback': {
      const m = BYTE_FALLBACK.exec(piece);
      return m ? Uint8Array.of(parseInt(m[1], 16)) : piece;
    }
    case 'Fuse':
      state.fused = true;
      return piece;
    case 'Strip': {
      if (state.fused) return piece; // after Fuse it strips the whole text's ends, i.e. only the first token
      const c = typeof cfg.content === 'string' ? cfg.content : ' ';
      let s = piece;
      for (let i = 0; i < ((cfg.start as number) ?? 0) && s.startsWith(c); i++) s = s.slice(c.length);
      for (let i = 0; i < ((cfg.stop as number) ?? 0) && s.endsWith(c); i++) s = s.slice(0, s.length - c.length);
      return s;
    }
    case 'WordPiece': {
      const prefix = typeof cfg.prefix === 'string' ? cfg.prefix : '##';
      return piece.startsWith(prefix) ? piece.slice(prefix.length) : ' ' + piece;
    }
    case 'BPEDecoder':
      return typeof cfg.suffix === 'string' && cfg.suffix ? piece.replaceAll(cfg.suffix, ' ') : piece;
    default:
      return piece;
  }
}

/** a Hugging Face tokenizer.json (+ tokenizer_config.json) run by @huggingface/tokenizers, with special tokens and chat template */
export class HfTokenizer implements Tokenizer {
  readonly name: string;
  readonly vocabSize: number;
  readonly special: SpecialTokens;
  readonly chatTemplate?: string;
  private readonly files: HfTokenizerFiles;
  private readonly lib: HfLibTokenizer;
  private readonly texts: (string | undefined)[];
  private readonly added: Set<number>;
  private readonly bytes: (Uint8Array | undefined)[];
  private readonly cleanup: boolean;
  private readonly extraStopIds: number[];

  constructor(files: HfTokenizerFiles, opts: HfTokenizerOptions = {}) {
    const tsrc = opts.tokenizerSource ?? 'tokenizer.json';
    const csrc = opts.configSource ?? 'tokenizer_config.json';
    const tj = files.tokenizer;
    const cfg = files.config ?? {};
    if (!isRecord(tj)) throw new Error(`${tsrc}: expected a JSON object`);
    if (!isRecord(cfg)) throw new Error(`${csrc}: expected a JSON object`);
    if (!isRecord(tj.model)) throw new Error(`${tsrc}: field model missing or not an object`);
    if (typeof tj.model.type !== 'string') throw new Error(`${tsrc}: field model.type missing (BPE, WordPiece or Unigram)`);
    const V = maxId(tj, tsrc) + 1;
    this.files = { tokenizer: tj, config: cfg };
    try {
      // the library expects every top-level field present
      this.lib = new HfLibTokenizer(
        { normalizer: null, pre_tokenizer: null, post_processor: null, decoder: null, ...tj, added_tokens: tj.added_tokens ?? [] },
        cfg,
      );
      // some malformed components only fail when used: try them once so the error names the file
      const probe = this.lib.encode('Hello world, é 🙂\n1 2', { add_special_tokens: true }).ids.filter((id: number | undefined) => id !== undefined);
      if (probe.length > 0) this.lib.decode(probe);
    } catch (e) {
      throw new Error(`${tsrc}: cannot build the tokenizer: ${(e as Error).message.split('\n')[0]}`);
    }
    this.vocabSize = V;
    this.name = `hf-${tj.model.type.toLowerCase()}-${V}`;
    this.texts = new Array(V);
    for (let id = 0; id < V; id++) this.texts[id] = this.lib.id_to_token(id);
    this.added = new Set(((tj.added_tokens as { id: number }[]) ?? []).map((t) => t.id));
    this.bytes = new Array(V);
    this.cleanup = cfg.clean_up_tokenization_spaces === true;

    const find = (field: string, fallback?: string): SpecialToken | undefined => {
      const content = tokenContent(cfg[field], field, csrc) ?? fallback;
      if (content === undefined) return undefined;
      const id = this.lib.token_to_id(content);
      if (id === undefined) throw new Error(`${csrc}: field ${field} is ${JSON.stringify(content)}, which is not in the vocabulary of ${tsrc}`);
      return { id, content };
    };
    const modelUnk = typeof tj.model.unk_token === 'string' ? tj.model.unk_token : undefined;
    const bos = find('bos_token');
    const eos = find('eos_token');
    const pad = find('pad_token');
    const unk = find('unk_token', modelUnk);
    this.extraStopIds = (opts.extraStopIds ?? []).map((id, i) => {
      checkTokenId(id, `stop id ${i}`);
      if (id >= V) throw new Error(`stop id ${id} (generation_config.json eos_token_id) is outside the vocabulary [0, ${V})`);
      return id;
    });
    const stopIds = [...new Set([...(eos ? [eos.id] : []), ...this.extraStopIds])];
    this.special = { ...(bos && { bos }), ...(eos && { eos }), ...(pad && { pad }), ...(unk && { unk }), stopIds };
    const tpl = pickTemplate(cfg.chat_template, csrc);
    if (tpl !== undefined) this.chatTemplate = tpl;
  }

  encode(text: string, opts: HfEncodeOptions = {}): Int32Array {
    if (text.length === 0 && !opts.addSpecialTokens) return new Int32Array(0);
    let ids: number[];
    try {
      ids = this.lib.encode(text, { add_special_tokens: Boolean(opts.addSpecialTokens) }).ids;
    } catch (e) {
      throw new Error(`encode: tokenizer ${this.name} failed (malformed tokenizer.json?): ${(e as Error).message.split('\n')[0]}`);
    }
    const out = new Int32Array(ids.length);
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      if (id === undefined) {
        throw new Error(`encode: token ${i} of the text has no id (not in the vocabulary, and the tokenizer has no unk token or byte fallback)`);
      }
      out[i] = id;
    }
    return out;
  }

  decode(ids: ArrayLike<number>): string {
    if (ids.length === 0) return '';
    const list: number[] = new Array(ids.length);
    for (let i = 0; i < ids.length; i++) {
      checkId(ids[i], this.vocabSize, i);
      list[i] = ids[i];
    }
    try {
      return this.lib.decode(list, { skip_special_tokens: false, clean_up_tokenization_spaces: this.cleanup });
    } catch (e) {
      throw new Error(`decode: tokenizer ${this.name} failed (malformed tokenizer.json?): ${(e as Error).message.split('\n')[0]}`);
    }
  }

  tokenBytes(id: number): Uint8Array {
    checkId(id, this.vocabSize, 0);
    let b = this.bytes[id];
    if (b === undefined) {
      const text = this.texts[id];
      if (text === undefined) b = new Uint8Array(0);
      else {
        const p = decodePiece(this.files.tokenizer.decoder, text, this.added.has(id), { fused: false });
        b = typeof p === 'string' ? utf8.encode(p) : p;
      }
      this.bytes[id] = b;
    }
    return b;
  }

  /** The vocabulary text of an id (e.g. "Ġworld", "▁hello", "<0x0A>"), undefined for a hole. */
  idToToken(id: number): string | undefined {
    return this.texts[id];
  }

  tokenToId(text: string): number | undefined {
    return this.lib.token_to_id(text);
  }

  toHuggingFace(): HfTokenizerFiles {
    return { tokenizer: this.files.tokenizer, config: this.files.config };
  }

  toJSON(): HfJSON {
    return {
      type: 'hf',
      version: 1,
      vocab_size: this.vocabSize,
      tokenizer: this.files.tokenizer,
      config: this.files.config,
      ...(this.extraStopIds.length ? { stop_ids: [...this.extraStopIds] } : {}),
    };
  }

  /** From toJSON() (a moe-ts checkpoint's state.json); errors name the field. */
  static fromJSON(json: Record<string, unknown>): HfTokenizer {
    if (json.version !== 1) throw new Error(`tokenizer JSON: field version must be 1 for type "hf", got ${JSON.stringify(json.version)}`);
    if (!isRecord(json.tokenizer)) throw new Error('tokenizer JSON: field tokenizer must be the tokenizer.json object');
    if (json.config !== undefined && !isRecord(json.config)) throw new Error('tokenizer JSON: field config must be the tokenizer_config.json object');
    if (json.stop_ids !== undefined && !Array.isArray(json.stop_ids)) throw new Error('tokenizer JSON: field stop_ids must be an array of ids');
    const tok = new HfTokenizer(
      { tokenizer: json.tokenizer, config: (json.config as Record<string, unknown>) ?? {} },
      { tokenizerSource: 'tokenizer JSON field tokenizer', configSource: 'tokenizer JSON field config', extraStopIds: json.stop_ids as number[] | undefined },
    );
    if (json.vocab_size !== undefined && json.vocab_size !== tok.vocabSize) {
      throw new Error(`tokenizer JSON: field vocab_size is ${JSON.stringify(json.vocab_size)}, but the tokenizer has ${tok.vocabSize} ids`);
    }
    return tok;
  }
}
