/**
 * Synthetic real-size MoE checkpoints as Hugging Face model directories (config.json in the
 * transformers layout of OlmoeForCausalLM / Qwen3MoeForCausalLM, model.safetensors or shards +
 * model.safetensors.index.json, the moe-ts tokenizer file), the safetensors twin of
 * src/io/gguf/synth.ts. Streamed: the non-expert tensors come from a small moe-ts skeleton of the
 * same config (width-32 experts), each expert matrix is generated from the seed and written one
 * at a time, so the model is never whole in memory.
 *
 * The expert values are the GGUF synth's: the same seeded Q8_0 / Q4_0 blocks (`grid`), decoded.
 * Stored as float32 they are exactly the GGUF file's experts; bf16 / f16 round them.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ByteTokenizer } from '../../data/tokenizer/index.js';
import { DTYPE_BYTES, fromFloat32 } from '../../tensor/dtype.js';
import { randomBlocks, synthExpertSeed, synthSkeleton } from '../gguf/synth.js';
import { decodeTensor } from '../gguf/quant.js';
import { INDEX_FILE, SINGLE_FILE } from '../safetensors-index.js';
import { writeJsonAtomicSync, writeStreamAtomicSync, fsyncDirSync } from '../atomic.js';
import { saveTokenizer } from '../tokenizer.js';
import { archForModel } from './archs.js';
import { hfConfigFor, hfTensors, MOE_TS_TOKENIZER_FILE } from './pretrained.js';

/** Storage dtypes synth writes. */
export type SynthSafetensorsDType = 'bfloat16' | 'float16' | 'float32';

/** Options of writeSynthSafetensors. */
export interface SynthSafetensorsOptions {
  /** Layers to write (default the shape's defaultLayers). */
  layers?: number;
  /** Storage dtype (default bfloat16, as the real checkpoints). */
  dtype?: SynthSafetensorsDType;
  /** The value grid of the experts: the GGUF synth's blocks of this format, decoded (default q8_0). */
  grid?: 'q8_0' | 'q4_0';
  seed?: number;
  /** max_position_embeddings written to config.json (default 1024). */
  context?: number;
  /** Start a new shard once one would exceed this many bytes (default 2 GB). */
  maxShardBytes?: number;
  /** Override fields of the shape's config (tests use tiny ones). */
  override?: Record<string, unknown>;
}

/** What writeSynthSafetensors wrote. */
export interface SynthSafetensorsReport {
  dir: string;
  files: string[];
  modelType: string;
  dtype: SynthSafetensorsDType;
  layers: number;
  /** Bytes of the weights (all shards' tensor data). */
  bytes: number;
  expertBytes: number;
  params: number;
}

const CODE: Record<SynthSafetensorsDType, string> = { bfloat16: 'BF16', float16: 'F16', float32: 'F32' };

interface Planned {
  name: string;
  code: string;
  shape: number[];
  nbytes: number;
  /** The bytes, produced when written. */
  bytes: () => Uint8Array;
}

/** Write a synthetic model of `shape` as a Hugging Face directory (see the file comment). */
export function writeSynthSafetensors(shapeName: string, dir: string, opts: SynthSafetensorsOptions = {}): SynthSafetensorsReport {
  const dtype = opts.dtype ?? 'bfloat16';
  if (!(dtype in CODE)) throw new Error(`synth: dtype must be bfloat16, float16 or float32, got ${JSON.stringify(dtype)}`);
  const grid = opts.grid ?? 'q8_0';
  if (grid !== 'q8_0' && grid !== 'q4_0') throw new Error(`synth: grid must be q8_0 or q4_0, got ${JSON.stringify(grid)}`);
  const maxShard = opts.maxShardBytes ?? 2_000_000_000;
  if (!(maxShard > 0)) throw new Error(`synth: maxShardBytes must be positive, got ${maxShard}`);
  const { layers, seed, real, skel } = synthSkeleton(shapeName, opts);
  if (fs.existsSync(dir)) {
    if (!fs.statSync(dir).isDirectory()) throw new Error(`synth: ${dir} exists and is not a directory`);
    const clash = fs.readdirSync(dir).find((f) => f === 'config.json' || f.endsWith('.safetensors') || f === INDEX_FILE);
    if (clash) throw new Error(`synth: ${dir} already holds a model (${clash}); remove it first`);
  }
  const fe = real.moe_intermediate_size;
  const d = real.hidden_size;
  const E = real.num_local_experts;
  const arch = archForModel(real);
  const item = DTYPE_BYTES[dtype];
  // the skeleton's tensors but its (width-32) experts; converted now: they are the small part
  const plan: Planned[] = [];
  const expertRe = new RegExp(`^model\\.layers\\.(\\d+)\\.${arch.moePrefix.replace('.', '\\.')}\\.experts\\.(\\d+)\\.(\\w+)\\.weight$`);
  for (const [name, t] of hfTensors(skel, arch, dtype)) {
    if (expertRe.test(name)) continue;
    const b = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    plan.push({ name, code: t.dtype === 'float32' ? 'F32' : CODE[t.dtype as SynthSafetensorsDType], shape: [...t.shape], nbytes: b.length, bytes: () => b });
  }
  let expertBytes = 0;
  for (let l = 0; l < layers; l++) {
    if (!skel.layers[l].block_sparse_moe) continue;
    for (let e = 0; e < E; e++) {
      arch.expertNames.forEach((proj, k) => {
        const which = (['gate', 'up', 'down'] as const)[k];
        const [rows, cols] = which === 'down' ? [d, fe] : [fe, d];
        const s = synthExpertSeed(seed, l, which, e);
        // HF [out, in] row-major is the GGUF block order (rows of `cols` values)
        const produce = (): Uint8Array => {
          const v = decodeTensor(randomBlocks(grid, rows, cols, 1 / Math.sqrt(cols), s), grid === 'q8_0' ? 'Q8_0' : 'Q4_0', rows * cols);
          const out = dtype === 'float32' ? v : fromFloat32(v, dtype);
          return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
        };
        plan.push({ name: `model.layers.${l}.${arch.moePrefix}.experts.${e}.${proj}.weight`, code: CODE[dtype], shape: [rows, cols], nbytes: rows * cols * item, bytes: produce });
        expertBytes += rows * cols * item;
      });
    }
  }
  // shards in plan order; within a shard largest item size first, so every tensor is aligned
  const shards: Planned[][] = [[]];
  let size = 0;
  for (const p of plan) {
    if (size > 0 && size + p.nbytes > maxShard) {
      shards.push([]);
      size = 0;
    }
    shards[shards.length - 1].push(p);
    size += p.nbytes;
  }
  const itemOf = (p: Planned): number => (p.code === 'F32' ? 4 : 2);
  fs.mkdirSync(dir, { recursive: true });
  const n = shards.length;
  const fileOf = (i: number): string => (n === 1 ? SINGLE_FILE : `model-${String(i + 1).padStart(5, '0')}-of-${String(n).padStart(5, '0')}.safetensors`);
  const files: string[] = [];
  const weightMap: Record<string, string> = {};
  let total = 0;
  shards.forEach((s, i) => {
    const sorted = s.map((p, j) => ({ p, j })).sort((a, b) => itemOf(b.p) - itemOf(a.p) || a.j - b.j);
    const f = fileOf(i);
    total += writeSafetensorsStream(
      path.join(dir, f),
      sorted.map((x) => x.p),
    );
    files.push(f);
    for (const p of s) weightMap[p.name] = f;
  });
  if (n > 1) {
    const sortedMap: Record<string, string> = {};
    for (const k of Object.keys(weightMap).sort()) sortedMap[k] = weightMap[k];
    writeJsonAtomicSync(path.join(dir, INDEX_FILE), { metadata: { total_size: total }, weight_map: sortedMap });
    files.push(INDEX_FILE);
  }
  // config.json of the real model (the skeleton's but the expert width)
  const cfg = { ...hfConfigFor(skel, arch, dtype), ...arch.toHfConfig(real) };
  writeJsonAtomicSync(path.join(dir, 'config.json'), cfg);
  saveTokenizer(path.join(dir, MOE_TS_TOKENIZER_FILE), new ByteTokenizer());
  files.push('config.json', MOE_TS_TOKENIZER_FILE);
  fsyncDirSync(dir);
  const params = plan.reduce((a, p) => a + p.shape.reduce((x, y) => x * y, 1), 0);
  return { dir, files, modelType: arch.modelType, dtype, layers, bytes: total, expertBytes, params };
}

/** Write one safetensors file from planned tensors, in the given order, streamed (temp file, fsync, rename). Returns the data bytes. */
function writeSafetensorsStream(file: string, tensors: Planned[]): number {
  const header: Record<string, unknown> = Object.create(null);
  header.__metadata__ = { format: 'pt' };
  let off = 0;
  for (const t of tensors) {
    header[t.name] = { dtype: t.code, shape: t.shape, data_offsets: [off, off + t.nbytes] };
    off += t.nbytes;
  }
  const raw = new TextEncoder().encode(JSON.stringify(header));
  const pad = (8 - ((8 + raw.length) % 8)) % 8;
  const head = new Uint8Array(8 + raw.length + pad).fill(0x20);
  new DataView(head.buffer).setBigUint64(0, BigInt(raw.length + pad), true);
  head.set(raw, 8);
  writeStreamAtomicSync(file, (fd) => {
    let pos = 0;
    const put = (b: Uint8Array): void => {
      let o = 0;
      while (o < b.length) o += fs.writeSync(fd, b, o, b.length - o, pos + o);
      pos += b.length;
    };
    put(head);
    for (const t of tensors) {
      const b = t.bytes();
      if (b.length !== t.nbytes) throw new Error(`synth: tensor "${t.name}": ${b.length} bytes produced, needs ${t.nbytes}`);
      put(b);
    }
  });
  return off;
}
