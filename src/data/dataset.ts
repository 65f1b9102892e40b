/**
 * Token streams -> language-model batches. Each domain has a train and a validation split (its
 * own, or the tail of its one stream); training batches are random contiguous windows from a weighted mix of
 * domains, validation walks fixed windows per domain so per-domain losses are comparable
 * across runs and checkpoints.
 */
import { Rng } from '../tensor/random.js';
import type { Tokenizer } from './tokenizer/types.js';

export interface DomainTokens {
  name: string;
  tokens: Int32Array;
  /** Relative sampling weight for training (default 1); 0 = validation only. */
  weight?: number;
  /**
   * The domain's own validation split. Given: `tokens` is all training data and this is all
   * validation data (valFraction does not apply). Absent: the tail of `tokens` is held out.
   */
  val?: Int32Array;
}

export interface Batch {
  batchSize: number;
  seqLen: number;
  /** [batchSize x seqLen], row-major. */
  inputs: Int32Array;
  /** [batchSize x seqLen]: inputs shifted by one (next-token targets). */
  targets: Int32Array;
  /** [batchSize]: domain index of each sequence. */
  domains: Int32Array;
  /** [batchSize]: start offset of each window in its domain's train (or validation) split. */
  starts: Int32Array;
}

export interface DatasetOptions {
  seqLen: number;
  batchSize: number;
  /** Fraction of each domain's tokens (the tail) held out for validation (default 0.1). */
  valFraction?: number;
  seed?: number;
  /** Cap on validation windows per domain (evenly spaced over the split); default: all. */
  maxValWindows?: number;
}

export interface DatasetState {
  rng: number[];
  step: number;
}

/** Head/tail split of a stream (views, no copy). The last floor(n * valFraction) tokens are validation. */
export function splitTrainVal(tokens: Int32Array, valFraction: number): { train: Int32Array; val: Int32Array } {
  if (!(valFraction >= 0 && valFraction < 1)) throw new Error(`valFraction must be in [0, 1), got ${valFraction}`);
  const nVal = Math.floor(tokens.length * valFraction);
  const cut = tokens.length - nVal;
  return { train: tokens.subarray(0, cut), val: tokens.subarray(cut) };
}

/** Tokenise named texts into domains (`valid`: the domain's own validation text, tokenised apart). */
export function tokenizeDomains(tok: Tokenizer, texts: { name: string; text: string; valid?: string; weight?: number }[]): DomainTokens[] {
  return texts.map(({ name, text, valid, weight }) => ({ name, tokens: tok.encode(text), weight, ...(valid !== undefined ? { val: tok.encode(valid) } : {}) }));
}

interface Domain {
  name: string;
  weight: number;
  train: Int32Array;
  val: Int32Array;
  valStarts: Int32Array;
}

export class MixedDataset {
  readonly seqLen: number;
  readonly batchSize: number;
  readonly valFraction: number;
  private readonly ds: Domain[];
  private readonly cum: Float64Array;
  private rng: Rng;
  private step = 0;

  constructor(domains: DomainTokens[], opts: DatasetOptions) {
    const { seqLen, batchSize } = opts;
    const valFraction = opts.valFraction ?? 0.1;
    if (!Number.isInteger(seqLen) || seqLen < 1) throw new Error(`dataset: seqLen must be a positive integer, got ${seqLen}`);
    if (!Number.isInteger(batchSize) || batchSize < 1) throw new Error(`dataset: batchSize must be a positive integer, got ${batchSize}`);
    if (!(valFraction >= 0 && valFraction < 1)) throw new Error(`dataset: valFraction must be in [0, 1), got ${valFraction}`);
    if (opts.maxValWindows !== undefined && !(Number.isInteger(opts.maxValWindows) && opts.maxValWindows >= 1)) {
      throw new Error(`dataset: maxValWindows must be a positive integer, got ${opts.maxValWindows}`);
    }
    if (!Array.isArray(domains) || domains.length === 0) throw new Error('dataset: at least one domain is required');
    this.seqLen = seqLen;
    this.batchSize = batchSize;
    this.valFraction = valFraction;
    const names = new Set<string>();
    this.ds = domains.map((d, i) => {
      const where = `dataset: domain ${i} ("${d.name}")`;
      if (names.has(d.name)) throw new Error(`${where}: duplicate domain name`);
      names.add(d.name);
      if (!(d.tokens instanceof Int32Array)) throw new Error(`${where}: tokens must be an Int32Array`);
      const weight = d.weight ?? 1;
      if (!(Number.isFinite(weight) && weight >= 0)) throw new Error(`${where}: weight must be a finite number >= 0, got ${weight}`);
      if (d.val !== undefined && !(d.val instanceof Int32Array)) throw new Error(`${where}: val must be an Int32Array`);
      const { train, val } = d.val !== undefined ? { train: d.tokens, val: d.val } : splitTrainVal(d.tokens, valFraction);
      if (weight > 0 && train.length < seqLen + 1) {
        throw new Error(`${where}: train split has ${train.length} tokens, fewer than seqLen + 1 = ${seqLen + 1}`);
      }
      if (d.val !== undefined && val.length < seqLen + 1) {
        throw new Error(`${where}: its validation split has ${val.length} tokens, fewer than seqLen + 1 = ${seqLen + 1}`);
      }
      if (d.val === undefined && valFraction > 0 && val.length < seqLen + 1) {
        throw new Error(`${where}: validation split has ${val.length} tokens (${valFraction} of ${d.tokens.length}), fewer than seqLen + 1 = ${seqLen + 1}`);
      }
      return { name: d.name, weight, train, val, valStarts: valWindowStarts(val.length, seqLen, opts.maxValWindows) };
    });
    this.cum = new Float64Array(this.ds.length);
    let acc = 0;
    this.ds.forEach((d, i) => (this.cum[i] = acc += d.weight));
    if (!(acc > 0)) throw new Error('dataset: all domain weights are 0, nothing to train on');
    this.rng = new Rng(opts.seed ?? 0);
  }

  get domainNames(): string[] {
    return this.ds.map((d) => d.name);
  }

  get numDomains(): number {
    return this.ds.length;
  }

  /** Index of a domain by name or index (validated). */
  domainIndex(domain: number | string): number {
    const i = typeof domain === 'number' ? domain : this.ds.findIndex((d) => d.name === domain);
    if (!Number.isInteger(i) || i < 0 || i >= this.ds.length) {
      throw new Error(`dataset: unknown domain ${JSON.stringify(domain)} (have ${this.domainNames.join(', ')})`);
    }
    return i;
  }

  trainTokens(domain: number | string): Int32Array {
    return this.ds[this.domainIndex(domain)].train;
  }

  valTokens(domain: number | string): Int32Array {
    return this.ds[this.domainIndex(domain)].val;
  }

  /** Training batches drawn so far. */
  get stepCount(): number {
    return this.step;
  }

  /** Next training batch: per sequence, a domain by weight, then a uniform random window. */
  nextBatch(): Batch {
    const { batchSize: B, seqLen: T } = this;
    const b = allocBatch(B, T);
    const total = this.cum[this.cum.length - 1];
    for (let s = 0; s < B; s++) {
      const u = this.rng.next() * total;
      let d = 0;
      while (d < this.cum.length - 1 && !(u < this.cum[d])) d++;
      const train = this.ds[d].train;
      const start = this.rng.int(train.length - T);
      fillRow(b, s, train, start, d);
    }
    this.step++;
    return b;
  }

  /** Number of fixed validation windows of a domain. */
  valWindowCount(domain: number | string): number {
    return this.ds[this.domainIndex(domain)].valStarts.length;
  }

  /**
   * The fixed validation windows of one domain, in batches of up to `batchSize` (last may be
   * smaller). Windows start at multiples of seqLen, so consecutive windows tile the split.
   */
  *valBatches(domain: number | string, batchSize = this.batchSize): Generator<Batch> {
    const d = this.domainIndex(domain);
    const { val, valStarts } = this.ds[d];
    for (let i = 0; i < valStarts.length; i += batchSize) {
      const n = Math.min(batchSize, valStarts.length - i);
      const b = allocBatch(n, this.seqLen);
      for (let s = 0; s < n; s++) fillRow(b, s, val, valStarts[i + s], d);
      yield b;
    }
  }

  /** Sampler state for checkpoints: restoring it continues the exact same batch sequence. */
  getState(): DatasetState {
    return { rng: this.rng.getState(), step: this.step };
  }

  setState(state: DatasetState): void {
    if (typeof state !== 'object' || state === null || !Number.isInteger(state.step) || state.step < 0) {
      throw new Error('dataset.setState: expected { rng: number[4], step: integer >= 0 }');
    }
    const r = new Rng(0);
    r.setState(state.rng);
    this.rng = r;
    this.step = state.step;
  }
}

function valWindowStarts(valLen: number, seqLen: number, max?: number): Int32Array {
  const count = valLen >= seqLen + 1 ? Math.floor((valLen - 1) / seqLen) : 0;
  const n = max !== undefined ? Math.min(max, count) : count;
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.floor((i * count) / n) * seqLen;
  return out;
}

function allocBatch(B: number, T: number): Batch {
  return {
    batchSize: B,
    seqLen: T,
    inputs: new Int32Array(B * T),
    targets: new Int32Array(B * T),
    domains: new Int32Array(B),
    starts: new Int32Array(B),
  };
}

function fillRow(b: Batch, s: number, stream: Int32Array, start: number, domain: number): void {
  const T = b.seqLen;
  b.inputs.set(stream.subarray(start, start + T), s * T);
  b.targets.set(stream.subarray(start + 1, start + T + 1), s * T);
  b.domains[s] = domain;
  b.starts[s] = start;
}
