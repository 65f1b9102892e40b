/**
 * Expert offloading for the fast decode path (Node): a GGUF model's routed experts stay in the
 * file (a Hugging Face directory's in its safetensors shards) and are read on demand at their offsets (fs.readSync straight into preallocated kernel
 * memory; the file is never read whole) into an LRU cache bounded by bytes. Everything that is
 * not a routed expert (embeddings, attention, norms, routers, LM head, KV cache) stays resident;
 * the budget is split as: resident weights + KV cache, then prefetch staging (top-k experts),
 * then the cache takes what is left, in whole experts.
 *
 * Prefetch (Pre-gated MoE: Pre-gated MoE: An Algorithm-System Co-Design for Fast and Scalable
 * Mixture-of-Expert Inference, 2024): while layer l runs its experts, the engine applies layer
 * l+1's router to the current hidden state and asks for those experts; a worker thread reads them
 * into shared staging slots, so a correct guess costs a memcpy instead of a read. Weights are the
 * file's own blocks (Q8_0 / Q4_0 / F32), used without re-quantisation; safetensors experts
 * (F32 / F16 / BF16) are converted to the engine's format as they are read.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { GGUFFile, GGUFError, fromGGUF, permuteRopeRows, ARCHS, type GGUFTensorInfo, type ArchName } from '../io/gguf/index.js';
import { quantBytes, quantizeMatrix, quantMatrixFromBlocks, type QuantFormat, type QuantKernels, type QuantMatrix, type PreparedMatrix } from '../kernels/quant.js';
import { DecodeEngine, type ExpertSource, type ExpertWeights, type WeightSource } from './decode.js';
import type { MoETransformerLM } from '../models/transformer.js';
import { headDimOf, type ModelConfig } from '../models/config.js';
import type { Tokenizer } from '../data/tokenizer/index.js';
import { f16ToF32, bf16ToF32 } from '../tensor/dtype.js';
import { fromPretrainedWithTokenizer, type HfExpertMatrix } from '../io/hf/pretrained.js';
import { HfFormatError } from '../io/hf/archs.js';
import { SafetensorsCheckpoint } from '../io/safetensors-index.js';

/** Counters of an expert cache: lookups, where they were served from, bytes read, time stalled. */
export interface OffloadStats {
  /** Expert lookups by the engine. */
  lookups: number;
  /** Served from the cache. */
  hits: number;
  /** Served from a finished (or awaited) prefetch. */
  prefetchHits: number;
  /** Read from the file on demand. */
  misses: number;
  /** Bytes read from the file (demand + prefetch, wasted prefetches included). */
  bytesRead: number;
  /** Milliseconds the engine waited: demand reads plus waits for prefetches in flight. */
  stallMs: number;
  /** Prefetch reads issued / never used. */
  prefetchIssued: number;
  prefetchWasted: number;
  /** Share of lookups the router prediction named (running average, measured whether or not reads were issued). */
  predictionAccuracy: number;
  /** Cache size in experts and bytes (staging excluded), and whether every expert fits (nothing offloaded). */
  cacheSlots: number;
  cacheBytes: number;
  stagingBytes: number;
  residentBytes: number;
  allResident: boolean;
}

/** hits + prefetch hits over lookups (1 when nothing was looked up). */
export function offloadHitRate(s: OffloadStats): number {
  return s.lookups ? (s.hits + s.prefetchHits) / s.lookups : 1;
}

/** One line for a stats printout. */
export function formatOffloadStats(s: OffloadStats): string {
  if (s.allResident) return `experts resident (${mb(s.cacheBytes)})`;
  return (
    `offload: cache ${s.cacheSlots} experts (${mb(s.cacheBytes)}), hit rate ${(100 * offloadHitRate(s)).toFixed(1)}% ` +
    `(${s.hits} cached, ${s.prefetchHits} prefetched, ${s.misses} read on demand), ${mb(s.bytesRead)} read, stall ${s.stallMs.toFixed(0)} ms` +
    (s.stagingBytes > 0 ? `, prefetch guesses ${(100 * s.predictionAccuracy).toFixed(0)}% right` : ', no prefetch')
  );
}

function mb(b: number): string {
  return b >= 1e9 ? `${(b / 1e9).toFixed(2)} GB` : b >= 1e6 ? `${(b / 1e6).toFixed(1)} MB` : `${(b / 1e3).toFixed(1)} KB`;
}

/**
 * Where one expert matrix of a layer lies: expert e at byte `offsets[e]` of file `files[e]`,
 * stored as `stored`: 'blocks' (already the cache's `format`: copied as they are) or a float
 * dtype (F32 / F16 / BF16, converted to `format` when read: Hugging Face shards).
 */
interface Loc {
  tensor: string;
  /** Per expert: index into the files, and byte offset there. */
  files: number[];
  offsets: number[];
  stored: 'blocks' | 'F32' | 'F16' | 'BF16';
  format: QuantFormat;
  rows: number;
  cols: number;
}

/** Bytes of one expert's matrix as stored in the file. */
function storedBytes(l: Loc): number {
  return l.stored === 'blocks' ? quantBytes(l.format, l.rows, l.cols) : l.rows * l.cols * (l.stored === 'F32' ? 4 : 2);
}

/** Float32 values of stored F32 / F16 / BF16 bytes (little-endian; `raw` may be unaligned). */
function floatsOf(raw: Uint8Array, stored: 'F32' | 'F16' | 'BF16', n: number): Float32Array {
  const b = raw.slice(0, n * (stored === 'F32' ? 4 : 2)); // aligned copy
  if (stored === 'F32') return new Float32Array(b.buffer, 0, n);
  const h = new Uint16Array(b.buffer, 0, n);
  return stored === 'F16' ? f16ToF32(h) : bf16ToF32(h);
}

interface LayerLocs {
  E: number;
  topK: number;
  w1: Loc;
  w3: Loc | null;
  w2: Loc;
}

/** Options of FileExperts. */
export interface FileExpertsOptions {
  /** Total bytes for resident weights + KV cache + staging + the expert cache (default: unbounded, every expert resident). */
  maxMemory?: number;
  /** Read predicted experts on a worker thread (default true; off when every expert is resident). */
  prefetch?: boolean;
}

/** Prefetch reads are issued only while at least this share of lookups was predicted (the prediction is scored all along). */
const PREFETCH_MIN_ACCURACY = 0.5;

const GGML_FORMAT: Record<string, QuantFormat | undefined> = { Q8_0: 'q8_0', Q4_0: 'q4_0', F32: 'f32' };

/** The routed experts of a GGUF file, read at their offsets into a byte-bounded LRU cache (see the file comment). */
export class FileExperts implements ExpertSource {
  private readonly layers: (LayerLocs | null)[];
  private readonly maxE: number;
  private readonly expertBytes: number;
  /** Bytes of one expert as stored (staging slot size; differs from expertBytes when converted on read). */
  private readonly storedExpertBytes: number;
  private readonly fds: number[];
  private readonly sizes: number[];
  private readonly files: string[];
  private kern: QuantKernels | null = null;
  private slots: ExpertWeights[] = [];
  /** key (layer * maxE + expert) -> slot, in LRU order (oldest first). */
  private readonly lru = new Map<number, number>();
  private readonly freeSlots: number[] = [];
  private worker: Worker | null = null;
  private staging: Uint8Array | null = null;
  private flags: Int32Array | null = null;
  /** staging slot -> key it holds or is reading (-1: free). */
  private stagedKey: number[] = [];
  private readonly staged = new Map<number, number>();
  private readonly stats: OffloadStats;
  /** The last prediction per layer, scored on that layer's next lookups. */
  private readonly predicted = new Map<number, Set<number>>();

  /**
   * `path` names the model in messages (a GGUF file or a Hugging Face directory); `files` are the
   * files the Locs index (default: `path` alone).
   */
  constructor(
    readonly path: string,
    layers: (LayerLocs | null)[],
    private readonly opts: FileExpertsOptions = {},
    files: readonly string[] = [path],
  ) {
    this.layers = layers;
    this.files = [...files];
    const some = layers.filter((l): l is LayerLocs => l !== null);
    if (!some.length) throw new Error(`offload ${path}: the model has no routed experts to offload`);
    this.maxE = Math.max(...some.map((l) => l.E));
    const shape = (l: LayerLocs): string => [l.w1, l.w3, l.w2].map((m) => (m ? `${m.format}[${m.rows},${m.cols}]` : '-')).join(' ');
    if (some.some((l) => shape(l) !== shape(some[0]))) throw new Error(`offload ${path}: every layer's experts must have one shape and format to share cache slots`);
    const l0 = some[0];
    this.expertBytes = quantBytes(l0.w1.format, l0.w1.rows, l0.w1.cols) * (l0.w3 ? 2 : 1) + quantBytes(l0.w2.format, l0.w2.rows, l0.w2.cols);
    this.storedExpertBytes = Math.max(...some.map((l) => [l.w1, l.w3, l.w2].reduce((a, m) => a + (m ? storedBytes(m) : 0), 0)));
    if (opts.maxMemory !== undefined && !(opts.maxMemory > 0 && Number.isFinite(opts.maxMemory))) throw new Error(`offload: maxMemory must be a positive number of bytes, got ${opts.maxMemory}`);
    this.fds = [];
    try {
      for (const f of this.files) this.fds.push(fs.openSync(f, 'r'));
    } catch (e) {
      for (const fd of this.fds) fs.closeSync(fd);
      throw e;
    }
    this.sizes = this.fds.map((fd) => fs.fstatSync(fd).size);
    this.stats = {
      lookups: 0,
      hits: 0,
      prefetchHits: 0,
      misses: 0,
      bytesRead: 0,
      stallMs: 0,
      prefetchIssued: 0,
      prefetchWasted: 0,
      predictionAccuracy: 1,
      cacheSlots: 0,
      cacheBytes: 0,
      stagingBytes: 0,
      residentBytes: 0,
      allResident: false,
    };
  }

  /** Bytes of one expert (all its matrices). */
  get bytesPerExpert(): number {
    return this.expertBytes;
  }

  /** Bytes of one expert as stored in the file (what a prefetch staging slot holds). */
  get storedBytesPerExpert(): number {
    return this.storedExpertBytes;
  }

  /** Bytes of every routed expert in the file. */
  get totalExpertBytes(): number {
    return this.layers.reduce((a, l) => a + (l ? l.E * this.expertBytes : 0), 0);
  }

  covers(layer: number): boolean {
    return this.layers[layer] != null;
  }

  bind(kernels: QuantKernels, residentBytes: number): void {
    if (this.kern) throw new Error('offload: FileExperts is already bound to an engine');
    if (!kernels.allocate || !kernels.bytesOf) throw new Error(`offload: the ${kernels.name} kernels cannot hold offloaded experts (no allocate/bytesOf)`);
    this.kern = kernels;
    const eb = this.expertBytes;
    const total = this.totalExpertBytes;
    const count = total / eb;
    const topK = Math.max(...this.layers.map((l) => l?.topK ?? 0));
    const budget = this.opts.maxMemory ?? Infinity;
    const allResident = budget - residentBytes >= total;
    let nSlots = count;
    let nStaging = 0;
    if (!allResident) {
      nStaging = (this.opts.prefetch ?? true) ? topK : 0;
      const sb = this.storedExpertBytes;
      nSlots = Math.floor((budget - residentBytes - nStaging * sb) / eb);
      if (nSlots < topK) {
        throw new Error(
          `offload: maxMemory ${mb(budget)} is too small: resident weights and KV cache take ${mb(residentBytes)}${nStaging ? `, prefetch staging ${mb(nStaging * sb)}` : ''}, ` +
            `and one layer's top-${topK} experts need ${mb(topK * eb)} (at least ${mb(residentBytes + nStaging * sb + topK * eb)} in all)`,
        );
      }
      nSlots = Math.min(nSlots, count);
    }
    Object.assign(this.stats, { cacheSlots: nSlots, cacheBytes: nSlots * eb, stagingBytes: nStaging * this.storedExpertBytes, residentBytes, allResident });
    const l0 = this.layers.find((l) => l)!;
    for (let i = 0; i < nSlots; i++) {
      this.slots.push({
        w1: kernels.allocate(l0.w1.format, l0.w1.rows, l0.w1.cols),
        w3: l0.w3 ? kernels.allocate(l0.w3.format, l0.w3.rows, l0.w3.cols) : null,
        w2: kernels.allocate(l0.w2.format, l0.w2.rows, l0.w2.cols),
      });
      this.freeSlots.push(nSlots - 1 - i);
    }
    if (allResident) {
      // everything fits: read every expert once, up front (no offloading, no prefetch)
      this.layers.forEach((l, li) => {
        if (l) for (let e = 0; e < l.E; e++) this.load(li, e, this.freeSlots.pop()!);
      });
      this.stats.bytesRead = 0;
    } else if (nStaging > 0) {
      const staging = new SharedArrayBuffer(nStaging * this.storedExpertBytes);
      const state = new SharedArrayBuffer(nStaging * 4);
      this.staging = new Uint8Array(staging);
      this.flags = new Int32Array(state);
      this.stagedKey = new Array<number>(nStaging).fill(-1);
      this.worker = new Worker(new URL('./offload-worker.js', import.meta.url), { workerData: { paths: this.files, staging, state } });
      this.worker.unref();
    }
  }

  /** Counters so far (a copy). */
  getStats(): OffloadStats {
    return { ...this.stats };
  }

  /** Zero the lookup / read / stall counters (the cache keeps its contents). */
  resetStats(): void {
    Object.assign(this.stats, { lookups: 0, hits: 0, prefetchHits: 0, misses: 0, bytesRead: 0, stallMs: 0, prefetchIssued: 0, prefetchWasted: 0 });
    // predictionAccuracy is a running average of the model's routing: kept
  }

  /** Experts currently cached (for tests: never more than the slots). */
  get cachedCount(): number {
    return this.lru.size;
  }

  /** [file offset, stored bytes] of each matrix of expert e of layer li, in w1, w3, w2 order. */
  private ranges(li: number, e: number): { loc: Loc; file: number; off: number; len: number }[] {
    const l = this.layers[li]!;
    return [l.w1, l.w3, l.w2].filter((m): m is Loc => m !== null).map((loc) => ({ loc, file: loc.files[e], off: loc.offsets[e], len: storedBytes(loc) }));
  }

  /** Put one matrix's stored bytes into its cache view: as they are, or converted to the cache format. */
  private static place(loc: Loc, raw: Uint8Array, view: Uint8Array): void {
    if (loc.stored === 'blocks') {
      view.set(raw);
      return;
    }
    const x = floatsOf(raw, loc.stored, loc.rows * loc.cols);
    const q = loc.format === 'f32' ? x : quantizeMatrix(x, loc.rows, loc.cols, loc.format).data;
    view.set(new Uint8Array(q.buffer, q.byteOffset, q.byteLength));
  }

  private views(slot: number): Uint8Array[] {
    const s = this.slots[slot];
    return [s.w1, s.w3, s.w2].filter((m): m is PreparedMatrix => m !== null).map((m) => this.kern!.bytesOf!(m));
  }

  /** Read expert e of layer li from the file into a cache slot. */
  private load(li: number, e: number, slot: number): void {
    const vs = this.views(slot);
    this.ranges(li, e).forEach(({ loc, file, off, len }, i) => {
      // stored blocks go straight into the cache slot; floats through a buffer, converted
      const dst = loc.stored === 'blocks' ? vs[i] : new Uint8Array(len);
      let got = 0;
      while (got < len) {
        const r = fs.readSync(this.fds[file], dst, got, len - got, off + got);
        if (r === 0) {
          throw new GGUFError(`offload ${this.files[file]}: tensor "${loc.tensor}" expert ${e}: ${len} bytes at byte ${off} run past the end of the file at byte ${this.sizes[file]} (truncated?)`);
        }
        got += r;
      }
      if (dst !== vs[i]) FileExperts.place(loc, dst, vs[i]);
      this.stats.bytesRead += len;
    });
    this.lru.set(li * this.maxE + e, slot);
  }

  /** A slot to fill: a free one, else the least recently used one's (evicted). */
  private victim(): number {
    const f = this.freeSlots.pop();
    if (f !== undefined) return f;
    const [key, slot] = this.lru.entries().next().value as [number, number];
    this.lru.delete(key);
    return slot;
  }

  get(layer: number, expert: number): ExpertWeights {
    const key = layer * this.maxE + expert;
    this.stats.lookups++;
    const pred = this.predicted.get(layer);
    if (pred) this.stats.predictionAccuracy += ((pred.has(expert) ? 1 : 0) - this.stats.predictionAccuracy) / 32;
    const hit = this.lru.get(key);
    if (hit !== undefined) {
      this.stats.hits++;
      this.lru.delete(key);
      this.lru.set(key, hit);
      return this.slots[hit];
    }
    const slot = this.victim();
    const st = this.staged.get(key);
    const t0 = performance.now();
    if (st !== undefined && this.takeStaged(st, slot)) {
      this.stats.prefetchHits++;
      this.lru.set(key, slot);
    } else {
      this.stats.misses++;
      this.load(layer, expert, slot);
    }
    this.stats.stallMs += performance.now() - t0;
    return this.slots[slot];
  }

  /** Wait for staging slot st, copy it into cache slot `slot`; false when the worker's read failed. */
  private takeStaged(st: number, slot: number): boolean {
    const flags = this.flags!;
    while (Atomics.load(flags, st) === 1) Atomics.wait(flags, st, 1, 100);
    const ok = Atomics.load(flags, st) === 2;
    const key = this.stagedKey[st];
    this.staged.delete(key);
    this.stagedKey[st] = -1;
    Atomics.store(flags, st, 0);
    if (!ok) return false;
    let o = st * this.storedExpertBytes;
    const li = Math.floor(key / this.maxE);
    const vs = this.views(slot);
    this.ranges(li, key % this.maxE).forEach(({ loc, len }, i) => {
      FileExperts.place(loc, this.staging!.subarray(o, o + len), vs[i]);
      o += len;
    });
    return true;
  }

  prefetch(layer: number, experts: readonly number[]): void {
    if (!this.worker || !this.layers[layer]) return;
    const l = this.layers[layer]!;
    this.predicted.set(layer, new Set(experts.slice(0, l.topK)));
    // a wrong guess costs a read that competes with the compute; read only while guesses are mostly right
    if (this.stats.predictionAccuracy < PREFETCH_MIN_ACCURACY) return;
    const flags = this.flags!;
    for (const e of experts) {
      const key = layer * this.maxE + e;
      if (this.lru.has(key) || this.staged.has(key)) continue;
      // a free staging slot, else one holding a finished guess for another layer (never used: wasted)
      let st = this.stagedKey.indexOf(-1);
      if (st < 0) {
        st = this.stagedKey.findIndex((k, i) => Math.floor(k / this.maxE) !== layer && Atomics.load(flags, i) !== 1);
        if (st < 0) return;
        this.staged.delete(this.stagedKey[st]);
        this.stats.prefetchWasted++;
      }
      this.stagedKey[st] = key;
      this.staged.set(key, st);
      Atomics.store(flags, st, 1);
      let dst = st * this.storedExpertBytes;
      const reads: [number, number, number, number][] = [];
      for (const r of this.ranges(layer, e)) {
        reads.push([r.file, r.off, r.len, dst]);
        dst += r.len;
        this.stats.bytesRead += r.len;
      }
      this.stats.prefetchIssued++;
      this.worker.postMessage({ slot: st, reads });
    }
  }

  /** Close the file and stop the prefetch worker. */
  close(): void {
    if (this.worker) {
      this.worker.postMessage('close');
      this.worker = null;
    }
    for (const fd of this.fds.splice(0)) fs.closeSync(fd);
  }
}

/** Options of openGGUFEngine. */
export interface GGUFEngineOptions extends FileExpertsOptions {
  /** Kernels of the products (default the js reference; WasmQuantKernels is the SIMD one). */
  kernels?: QuantKernels;
  /** KV cache capacity in tokens (default the file's context length). */
  capacity?: number;
  /** Router Rng seed. */
  seed?: number;
  /** Passed to the DecodeEngine: AdapMoE expert skipping and capacity-aware dropping. */
  skipThreshold?: number;
  capacityFactor?: number;
}

/** The DecodeEngine options both offloading engines pass through from their own options. */
function engineOptions(opts: GGUFEngineOptions) {
  return {
    ...(opts.kernels ? { kernels: opts.kernels } : {}),
    ...(opts.capacity !== undefined ? { capacity: opts.capacity } : {}),
    ...(opts.seed !== undefined ? { seed: opts.seed } : {}),
    prefetch: opts.prefetch ?? true,
    skipThreshold: opts.skipThreshold ?? 0,
    capacityFactor: opts.capacityFactor ?? 0,
  };
}

/** A GGUF file compiled to the fast path with its experts in a FileExperts cache. */
export interface GGUFEngine {
  engine: DecodeEngine;
  /** An engine-only model: its experts are width-1 placeholders (the file's are in `experts`). */
  model: MoETransformerLM;
  tokenizer: Tokenizer;
  /** The file's config (the real expert width). */
  config: ModelConfig;
  arch: ArchName;
  experts: FileExperts;
  /** The file's size in bytes. */
  fileBytes: number;
  close(): void;
}

/**
 * Open a GGUF model for the fast decode path without reading its experts whole: quantised
 * tensors are used as their stored blocks (Q8_0 / Q4_0 / F32; other types are dequantised and
 * quantised to the experts' format), routed experts go through a FileExperts cache bounded by
 * `maxMemory` (unbounded: all read once up front).
 */
export function openGGUFEngine(path: string, opts: GGUFEngineOptions = {}): GGUFEngine {
  const g = fromGGUF(path, { skipExperts: true });
  const f = GGUFFile.open(path);
  let experts: FileExperts | null = null;
  try {
    const c = g.config;
    const spec = ARCHS[g.arch];
    if (c.num_local_experts === 0) throw new GGUFError(`offload ${path}: the model has no experts`);
    const d = c.hidden_size;
    const fe = c.moe_intermediate_size;
    const loc = (t: GGUFTensorInfo, rows: number, cols: number, E: number): Loc => {
      const format = GGML_FORMAT[t.type.name];
      if (!format) throw new GGUFError(`offload ${path}: tensor "${t.name}" is ${t.type.name}; offloaded experts must be Q8_0, Q4_0 or F32`);
      const stride = t.nbytes / E;
      return { tensor: t.name, files: new Array<number>(E).fill(0), offsets: Array.from({ length: E }, (_, e) => t.fileOffset + e * stride), stored: 'blocks', format, rows, cols };
    };
    const layers: (LayerLocs | null)[] = g.model.layers.map((l, i) => {
      const moe = l.block_sparse_moe;
      if (!moe) return null;
      const E = moe.numExperts;
      const b = `blk.${i}.`;
      return {
        E,
        topK: moe.topK,
        w1: loc(f.tensor(`${b}ffn_gate_exps.weight`), fe, d, E),
        w3: loc(f.tensor(`${b}ffn_up_exps.weight`), fe, d, E),
        w2: loc(f.tensor(`${b}ffn_down_exps.weight`), d, fe, E),
      };
    });
    const fmt = layers.find((l) => l)!.w1.format;
    experts = new FileExperts(path, layers, opts);
    const weights = ggufWeightSource(f, spec.ropeAdjacent, c);
    const engine = new DecodeEngine(g.model, {
      quant: fmt,
      weights,
      experts,
      ...engineOptions(opts),
    });
    const ex = experts;
    return { engine, model: g.model, tokenizer: g.tokenizer, config: c, arch: g.arch, experts: ex, fileBytes: f.size, close: () => ex.close() };
  } catch (e) {
    experts?.close();
    throw e;
  } finally {
    f.close();
  }
}

/**
 * The stored blocks of a GGUF file's projections and output by moe-ts name (read now, while the
 * file is open): Q8_0 / Q4_0 / F32 tensors as they are (rows past the model's, vocabulary
 * padding, cut off; llama-style q/k rows put back in moe-ts's RoPE order block row by block
 * row), null for other types (the engine quantises the model's).
 */
export function ggufWeightSource(f: GGUFFile, ropeAdjacent: boolean, c: ModelConfig): WeightSource {
  const headDim = headDimOf(c);
  return (name, rows, cols) => {
    let t: string;
    let m: RegExpMatchArray | null;
    if (name === 'lm_head.weight') t = f.tensors.has('output.weight') ? 'output.weight' : 'token_embd.weight';
    else if ((m = name.match(/^layers\.(\d+)\.self_attn\.([qkvo])_proj\.weight$/))) t = `blk.${m[1]}.attn_${m[2] === 'o' ? 'output' : m[2]}.weight`;
    else if ((m = name.match(/^layers\.(\d+)\.mlp\.(gate|up|down)_proj\.weight$/))) t = `blk.${m[1]}.ffn_${m[2]}.weight`;
    else return null;
    const info = f.tensors.get(t);
    const format = info ? GGML_FORMAT[info.type.name] : undefined;
    if (!info || !format || info.ne[0] !== cols || info.ne[1] < rows) return null;
    const rowBytes = quantBytes(format, 1, cols);
    const raw = f.readRaw(t).subarray(0, rows * rowBytes);
    let bytes: Uint8Array = raw;
    if (ropeAdjacent && /attn_[qk]\.weight$/.test(t)) {
      // the exporter interleaved each head's halves; undo it on whole rows of blocks
      const order = permuteRopeRows(
        Float32Array.from({ length: rows }, (_, i) => i),
        rows,
        1,
        headDim,
        true,
      );
      bytes = new Uint8Array(raw.length);
      for (let r = 0; r < rows; r++) bytes.set(raw.subarray(order[r] * rowBytes, (order[r] + 1) * rowBytes), r * rowBytes);
    }
    const data: Uint8Array | Float32Array = format === 'f32' ? new Float32Array(bytes.slice().buffer) : bytes.slice();
    return quantMatrixFromBlocks(format, rows, cols, data) as QuantMatrix;
  };
}

/** Options of openHfEngine. */
export interface HfEngineOptions extends GGUFEngineOptions {
  /** Weight format of the fast path, the cached experts included (converted from the shards' F32 / F16 / BF16 when read; default f32). */
  quant?: QuantFormat;
}

/** A Hugging Face directory compiled to the fast path with its experts in a FileExperts cache. */
export interface HfEngine {
  engine: DecodeEngine;
  /** An engine-only model: its experts are width-1 placeholders (the shards' are in `experts`). */
  model: MoETransformerLM;
  tokenizer: Tokenizer;
  /** The directory's config (the real expert width). */
  config: ModelConfig;
  /** The Hugging Face model_type it was read as. */
  modelType: string;
  experts: FileExperts;
  /** Bytes of the weight shards. */
  fileBytes: number;
  close(): void;
}

/**
 * Open a Hugging Face safetensors directory for the fast decode path without reading its routed
 * experts: everything else is loaded (and quantised to `quant`); the experts stay in the shards and
 * are read at their offsets into the FileExperts cache bounded by `maxMemory`, converted from
 * F32 / F16 / BF16 to `quant` as they are read (a safetensors file has no quantised blocks to copy).
 */
export function openHfEngine(dir: string, opts: HfEngineOptions = {}): HfEngine {
  const p = fromPretrainedWithTokenizer(dir, { skipExperts: true, seed: opts.seed ?? 0 });
  const locs = p.expertLocations;
  if (!locs || !locs.some((l) => l)) throw new HfFormatError(`offload ${dir}: the model has no routed experts to offload`);
  const fmt = opts.quant ?? 'f32';
  const files: string[] = [];
  const fileIndex = (f: string): number => {
    const i = files.indexOf(f);
    return i >= 0 ? i : files.push(f) - 1;
  };
  const loc = (ms: HfExpertMatrix[], what: string): Loc => {
    const m0 = ms[0];
    const odd = ms.find((m) => m.code !== m0.code);
    if (odd) throw new HfFormatError(`offload ${dir}: tensor ${odd.tensor} is ${odd.code} but ${m0.tensor} is ${m0.code}; a layer's experts must share one dtype`);
    const tensor = ms.length > 1 && ms[1].tensor !== m0.tensor ? m0.tensor.replace(/\.experts\.0\./, '.experts.*.') : m0.tensor;
    return { tensor: tensor || what, files: ms.map((m) => fileIndex(m.file)), offsets: ms.map((m) => m.offset), stored: m0.code, format: fmt, rows: m0.rows, cols: m0.cols };
  };
  const layers: (LayerLocs | null)[] = locs.map((l) => (l ? { E: l.E, topK: l.topK, w1: loc(l.w1, 'w1'), w3: loc(l.w3, 'w3'), w2: loc(l.w2, 'w2') } : null));
  const experts = new FileExperts(dir, layers, opts, files);
  try {
    const engine = new DecodeEngine(p.model, {
      quant: fmt,
      experts,
      ...engineOptions(opts),
    });
    const ck = new SafetensorsCheckpoint(dir);
    const fileBytes = ck.files.reduce((a, f) => a + fs.statSync(path.join(dir, f)).size, 0);
    ck.close();
    return { engine, model: p.model, tokenizer: p.tokenizer, config: p.config, modelType: p.modelType, experts, fileBytes, close: () => experts.close() };
  } catch (e) {
    experts.close();
    throw e;
  }
}
