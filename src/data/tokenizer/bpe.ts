/**
 * Trainable byte-level BPE (Sennrich et al., "Neural Machine Translation of Rare Words with
 * Subword Units", 2016; byte-level variant of GPT-2, Radford et al., 2019).
 *
 * Ids 0..255 are the raw bytes; merge i creates id 256 + i from an earlier pair [a, b].
 * Text is pre-tokenised with a GPT-2-style regex so merges never cross word boundaries.
 */
import { checkId, HfTokenizerFiles, Tokenizer, TokenizerJSON } from './types.js';
import { byteLevelBpeFiles } from './byte-level.js';
import { DEFAULT_CHAT_TEMPLATE } from './chat-template.js';
import { checkSafePattern } from './pattern.js';

/** GPT-2's pre-tokenisation pattern (contractions, letter runs, digit runs, punctuation runs, whitespace). */
export const GPT2_PATTERN = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/** Pair keys pack two ids in one number; this bounds the vocabulary. */
const KEY = 0x200000;
export const MAX_BPE_VOCAB = KEY;
const CACHE_LIMIT = 200_000;

const utf8 = new TextEncoder();

export interface BpeTrainOptions {
  /** Target vocabulary size (>= 256); training stops early if no pair reaches minFrequency. */
  vocabSize: number;
  /** Smallest pair count worth merging (default 2). */
  minFrequency?: number;
  /** Pre-tokenisation regex source (flags "gu"); default GPT2_PATTERN. */
  pattern?: string;
}

export interface BpeJSON extends TokenizerJSON {
  type: 'bpe';
  version: 1;
  vocab_size: number;
  pattern: string;
  merges: [number, number][];
}

/** Longest token and total bytes over all tokens: self-doubling merges would otherwise ask for 2^n bytes. */
export const MAX_TOKEN_BYTES = 4096;
export const MAX_VOCAB_BYTES = 256 * 1024 * 1024;

function compilePattern(src: string): RegExp {
  try {
    checkSafePattern(src);
  } catch (e) {
    throw new Error(`tokenizer JSON: field pattern ${(e as Error).message}`);
  }
  try {
    return new RegExp(src, 'gu');
  } catch (e) {
    throw new Error(`tokenizer JSON: field pattern is not a valid regular expression: ${(e as Error).message}`);
  }
}

/** Split text into pre-tokens; any characters the pattern skips become their own pre-token so nothing is lost. */
function* preTokens(text: string, re: RegExp): Generator<string> {
  re.lastIndex = 0;
  let pos = 0;
  for (const m of text.matchAll(re)) {
    if (m[0].length === 0) continue;
    if (m.index! > pos) yield text.slice(pos, m.index);
    yield m[0];
    pos = m.index! + m[0].length;
  }
  if (pos < text.length) yield text.slice(pos);
}

export class BpeTokenizer implements Tokenizer {
  readonly name: string;
  readonly vocabSize: number;
  readonly merges: ReadonlyArray<readonly [number, number]>;
  readonly pattern: string;
  readonly chatTemplate = DEFAULT_CHAT_TEMPLATE;
  private readonly re: RegExp;
  private readonly ranks = new Map<number, number>();
  private readonly bytes: Uint8Array[] = [];
  private cache = new Map<string, Int32Array>();

  constructor(merges: ReadonlyArray<readonly [number, number]>, pattern: string = GPT2_PATTERN) {
    this.merges = merges.map(([a, b]) => [a, b] as const);
    this.pattern = pattern;
    this.re = compilePattern(pattern);
    this.vocabSize = 256 + merges.length;
    this.name = `bpe-${this.vocabSize}`;
    for (let i = 0; i < 256; i++) this.bytes.push(Uint8Array.of(i));
    let totalBytes = 256;
    merges.forEach(([a, b], i) => {
      const id = 256 + i;
      if (!Number.isInteger(a) || a < 0 || a >= id || !Number.isInteger(b) || b < 0 || b >= id) {
        throw new Error(`tokenizer JSON: field merges[${i}] = [${a}, ${b}] refers to an unknown token id (ids before this merge are < ${id})`);
      }
      const key = a * KEY + b;
      if (this.ranks.has(key)) throw new Error(`tokenizer JSON: field merges[${i}] = [${a}, ${b}] duplicates merges[${this.ranks.get(key)}]`);
      this.ranks.set(key, i);
      const x = this.bytes[a];
      const y = this.bytes[b];
      const len = x.length + y.length;
      if (len > MAX_TOKEN_BYTES) throw new Error(`tokenizer JSON: field merges[${i}] = [${a}, ${b}] makes a token of ${len} bytes, more than the limit of ${MAX_TOKEN_BYTES}`);
      totalBytes += len;
      if (totalBytes > MAX_VOCAB_BYTES) throw new Error(`tokenizer JSON: field merges[${i}]: the tokens up to here hold ${totalBytes} bytes, more than the limit of ${MAX_VOCAB_BYTES}`);
      const z = new Uint8Array(len);
      z.set(x);
      z.set(y, x.length);
      this.bytes.push(z);
    });
  }

  /**
   * Learn merges from `corpus`. Pair counts are kept per unique pre-token (weighted by its
   * frequency) and updated incrementally for the words a merge touches; the best pair comes from
   * a max-heap with lazy deletion. Ties: higher count first, then the smaller (a, b) ids, so
   * the same corpus always gives the same merges.
   */
  static train(corpus: string, opts: BpeTrainOptions): BpeTokenizer {
    const { vocabSize } = opts;
    const minFreq = opts.minFrequency ?? 2;
    const pattern = opts.pattern ?? GPT2_PATTERN;
    if (!Number.isInteger(vocabSize) || vocabSize < 256 || vocabSize > MAX_BPE_VOCAB) {
      throw new Error(`BpeTokenizer.train: vocabSize must be an integer in [256, ${MAX_BPE_VOCAB}], got ${vocabSize}`);
    }
    if (!(minFreq >= 1)) throw new Error(`BpeTokenizer.train: minFrequency must be >= 1, got ${minFreq}`);
    const re = compilePattern(pattern);

    const counts = new Map<string, number>();
    for (const t of preTokens(corpus, re)) counts.set(t, (counts.get(t) ?? 0) + 1);
    const words: number[][] = [];
    const freq: number[] = [];
    for (const [w, c] of counts) {
      const b = utf8.encode(w);
      if (b.length < 2) continue; // single bytes never take part in a pair
      words.push(Array.from(b));
      freq.push(c);
    }

    const pairCount = new Map<number, number>();
    const pairWords = new Map<number, number[]>(); // may hold stale or repeated word indices
    for (let w = 0; w < words.length; w++) {
      const s = words[w];
      const f = freq[w];
      for (let i = 0; i + 1 < s.length; i++) {
        const k = s[i] * KEY + s[i + 1];
        pairCount.set(k, (pairCount.get(k) ?? 0) + f);
        const l = pairWords.get(k);
        if (l) {
          if (l[l.length - 1] !== w) l.push(w);
        } else pairWords.set(k, [w]);
      }
    }
    const heap = new PairHeap();
    for (const [k, c] of pairCount) heap.push(c, k);

    const merges: [number, number][] = [];
    const stamp = new Int32Array(words.length).fill(-1);
    const delta = new Map<number, number>();
    while (256 + merges.length < vocabSize) {
      let best = -1;
      let bestCount = 0;
      while (heap.size > 0) {
        const c = heap.topCount();
        const k = heap.pop();
        if (pairCount.get(k) === c) {
          best = k;
          bestCount = c;
          break;
        }
      }
      if (best < 0 || bestCount < minFreq) break;
      const a = Math.floor(best / KEY);
      const b = best - a * KEY;
      const id = 256 + merges.length;
      merges.push([a, b]);

      delta.clear();
      const touched = pairWords.get(best) ?? [];
      const m = merges.length - 1;
      for (const w of touched) {
        if (stamp[w] === m) continue;
        stamp[w] = m;
        const s = words[w];
        let found = false;
        for (let i = 0; i + 1 < s.length; i++) {
          if (s[i] === a && s[i + 1] === b) {
            found = true;
            break;
          }
        }
        if (!found) continue;
        const f = freq[w];
        const ns: number[] = [];
        for (let i = 0; i < s.length; ) {
          if (i + 1 < s.length && s[i] === a && s[i + 1] === b) {
            ns.push(id);
            i += 2;
          } else ns.push(s[i++]);
        }
        // words are short, so re-deriving all their pairs is cheaper than patching neighbours
        for (let i = 0; i + 1 < s.length; i++) {
          const k = s[i] * KEY + s[i + 1];
          delta.set(k, (delta.get(k) ?? 0) - f);
        }
        for (let i = 0; i + 1 < ns.length; i++) {
          const k = ns[i] * KEY + ns[i + 1];
          delta.set(k, (delta.get(k) ?? 0) + f);
          if (ns[i] === id || ns[i + 1] === id) {
            const l = pairWords.get(k);
            if (l) {
              if (l[l.length - 1] !== w) l.push(w);
            } else pairWords.set(k, [w]);
          }
        }
        words[w] = ns;
      }
      for (const [k, d] of delta) {
        if (d === 0) continue;
        const c = (pairCount.get(k) ?? 0) + d;
        if (c <= 0) {
          // a pair of existing ids can never reappear, so its word list can go too
          pairCount.delete(k);
          pairWords.delete(k);
        } else {
          pairCount.set(k, c);
          heap.push(c, k);
        }
      }
      pairCount.delete(best);
      pairWords.delete(best);
    }
    return new BpeTokenizer(merges, pattern);
  }

  private encodeWord(word: string): Int32Array {
    const hit = this.cache.get(word);
    if (hit) return hit;
    const s = Array.from(utf8.encode(word));
    const ranks = this.ranks;
    // apply the lowest-rank merge present, all its occurrences, until none applies: this
    // reproduces the order in which training applied merges
    while (s.length > 1) {
      let bestRank = Infinity;
      for (let i = 0; i + 1 < s.length; i++) {
        const r = ranks.get(s[i] * KEY + s[i + 1]);
        if (r !== undefined && r < bestRank) bestRank = r;
      }
      if (bestRank === Infinity) break;
      const [a, b] = this.merges[bestRank];
      const id = 256 + bestRank;
      let j = 0;
      for (let i = 0; i < s.length; ) {
        if (i + 1 < s.length && s[i] === a && s[i + 1] === b) {
          s[j++] = id;
          i += 2;
        } else s[j++] = s[i++];
      }
      s.length = j;
    }
    const out = Int32Array.from(s);
    if (this.cache.size >= CACHE_LIMIT) this.cache = new Map();
    this.cache.set(word, out);
    return out;
  }

  encode(text: string): Int32Array {
    let out = new Int32Array(Math.max(16, text.length >> 1));
    let n = 0;
    for (const t of preTokens(text, this.re)) {
      const ids = this.encodeWord(t);
      if (n + ids.length > out.length) {
        const grown = new Int32Array(Math.max(out.length * 2, n + ids.length));
        grown.set(out.subarray(0, n));
        out = grown;
      }
      out.set(ids, n);
      n += ids.length;
    }
    return out.slice(0, n);
  }

  decode(ids: ArrayLike<number>): string {
    let len = 0;
    for (let i = 0; i < ids.length; i++) {
      checkId(ids[i], this.vocabSize, i);
      len += this.bytes[ids[i]].length;
    }
    const buf = new Uint8Array(len);
    let o = 0;
    for (let i = 0; i < ids.length; i++) {
      const b = this.bytes[ids[i]];
      buf.set(b, o);
      o += b.length;
    }
    return new TextDecoder('utf-8').decode(buf);
  }

  tokenBytes(id: number): Uint8Array {
    checkId(id, this.vocabSize, 0);
    return this.bytes[id];
  }

  /** The same ids in tokenizer.json form: Split by the pattern, ByteLevel, BPE with the merges in rank order. */
  toHuggingFace(): HfTokenizerFiles {
    return byteLevelBpeFiles(this.bytes, this.merges, this.pattern);
  }

  toJSON(): BpeJSON {
    return { type: 'bpe', version: 1, vocab_size: this.vocabSize, pattern: this.pattern, merges: this.merges.map(([a, b]) => [a, b]) };
  }

  /** Validate and load; errors name the offending field. */
  static fromJSON(json: Record<string, unknown>): BpeTokenizer {
    if (json.version !== 1) throw new Error(`tokenizer JSON: field version must be 1 for type "bpe", got ${JSON.stringify(json.version)}`);
    const merges = json.merges;
    if (!Array.isArray(merges)) throw new Error('tokenizer JSON: field merges must be an array of [a, b] pairs');
    merges.forEach((m, i) => {
      if (!Array.isArray(m) || m.length !== 2 || !m.every((x) => typeof x === 'number' && Number.isInteger(x))) {
        throw new Error(`tokenizer JSON: field merges[${i}] must be a pair of integer ids, got ${JSON.stringify(m)}`);
      }
    });
    const vs = json.vocab_size;
    if (typeof vs !== 'number' || !Number.isInteger(vs)) throw new Error(`tokenizer JSON: field vocab_size must be an integer, got ${JSON.stringify(vs)}`);
    if (vs !== 256 + merges.length) {
      throw new Error(`tokenizer JSON: field vocab_size is ${vs}, but 256 bytes + ${merges.length} merges give ${256 + merges.length}`);
    }
    if (vs > MAX_BPE_VOCAB) throw new Error(`tokenizer JSON: field vocab_size ${vs} exceeds the maximum ${MAX_BPE_VOCAB}`);
    const pattern = json.pattern ?? GPT2_PATTERN;
    if (typeof pattern !== 'string') throw new Error(`tokenizer JSON: field pattern must be a string, got ${typeof pattern}`);
    return new BpeTokenizer(merges as [number, number][], pattern);
  }
}

/** Binary max-heap of (count, pairKey): larger count first, then smaller key. */
class PairHeap {
  private c: number[] = [];
  private k: number[] = [];

  get size(): number {
    return this.c.length;
  }

  topCount(): number {
    return this.c[0];
  }

  private before(i: number, j: number): boolean {
    return this.c[i] > this.c[j] || (this.c[i] === this.c[j] && this.k[i] < this.k[j]);
  }

  private swap(i: number, j: number): void {
    const c = this.c[i];
    this.c[i] = this.c[j];
    this.c[j] = c;
    const k = this.k[i];
    this.k[i] = this.k[j];
    this.k[j] = k;
  }

  push(count: number, key: number): void {
    this.c.push(count);
    this.k.push(key);
    let i = this.c.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.before(i, p)) break;
      this.swap(i, p);
      i = p;
    }
  }

  pop(): number {
    const top = this.k[0];
    const lastC = this.c.pop()!;
    const lastK = this.k.pop()!;
    if (this.c.length > 0) {
      this.c[0] = lastC;
      this.k[0] = lastK;
      let i = 0;
      const n = this.c.length;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < n && this.before(l, m)) m = l;
        if (r < n && this.before(r, m)) m = r;
        if (m === i) break;
        this.swap(i, m);
        i = m;
      }
    }
    return top;
  }
}
