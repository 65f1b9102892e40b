/**
 * Synthetic real-size MoE checkpoints for benchmarks: random weights in the layer shapes of
 * OLMoE-1B-7B and Qwen3-30B-A3B (fewer layers), written as GGUF that llama.cpp (arch olmoe /
 * qwen3moe) and moe-ts both run. Nothing is downloaded and the model is never whole in memory:
 * the non-expert tensors come from a small moe-ts model of the same config with width-32
 * experts (exported, then copied), and each expert's Q8_0 / Q4_0 blocks are generated from the
 * seed and streamed to the file one expert at a time.
 *
 * The vocabulary is moe-ts's byte tokenizer (256 + EOS): the layers are real-size, the embedding
 * and output are not (OLMoE's is 50304 x 2048, Qwen3's 151936 x 2048), so per-token output cost
 * is understated against the real models; both engines see the same file.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { MoETransformerLM } from '../../models/transformer.js';
import { parseModelConfig, type ModelConfig } from '../../models/config.js';
import { ByteTokenizer } from '../../data/tokenizer/index.js';
import { f32ToF16Bits } from '../../tensor/dtype.js';
import { gguf, type GGUFValue } from './format.js';
import { GGUFFile } from './reader.js';
import { writeGGUFStreamSync, type GGUFTensorHeader } from './writer.js';
import { exportGGUF } from './model.js';
import type { ArchName } from './arch.js';

/** A real model's layer shape. */
export interface SynthShape {
  arch: ArchName;
  /** Layers of the real model (synth writes fewer). */
  realLayers: number;
  defaultLayers: number;
  config: Record<string, unknown>;
}

/** The shapes synth writes: OLMoE-1B-7B (64 experts top-8, d 2048, width 1024) and Qwen3-30B-A3B (128 top-8, width 768, GQA 32/4, qk-norm). */
export const SYNTH_SHAPES: Readonly<Record<'olmoe-1b-7b' | 'qwen3-30b-a3b', SynthShape>> = {
  'olmoe-1b-7b': {
    arch: 'olmoe',
    realLayers: 16,
    defaultLayers: 4,
    config: {
      hidden_size: 2048,
      num_attention_heads: 16,
      num_local_experts: 64,
      num_experts_per_tok: 8,
      moe_intermediate_size: 1024,
      qk_norm: 'full',
      norm_topk_prob: false,
      rope_theta: 10000,
      rms_norm_eps: 1e-5,
      tie_word_embeddings: false,
    },
  },
  'qwen3-30b-a3b': {
    arch: 'qwen3moe',
    realLayers: 48,
    defaultLayers: 2,
    config: {
      hidden_size: 2048,
      num_attention_heads: 32,
      num_key_value_heads: 4,
      head_dim: 128,
      num_local_experts: 128,
      num_experts_per_tok: 8,
      moe_intermediate_size: 768,
      qk_norm: 'head',
      norm_topk_prob: true,
      rope_theta: 1000000,
      rms_norm_eps: 1e-6,
      tie_word_embeddings: false,
    },
  },
};

/** Options of writeSynthGGUF. */
export interface SynthOptions {
  /** Layers to write (default the shape's defaultLayers). */
  layers?: number;
  quant?: 'q8_0' | 'q4_0';
  seed?: number;
  /** Context length written to the file (default 1024; the KV cache is sized by it). */
  context?: number;
  /** Override fields of the shape's config (tests use tiny ones). */
  override?: Record<string, unknown>;
}

/** What writeSynthGGUF wrote. */
export interface SynthReport {
  path: string;
  arch: ArchName;
  quant: 'q8_0' | 'q4_0';
  layers: number;
  bytes: number;
  expertBytes: number;
  params: number;
}

/** A fast seeded byte stream (xorshift32 words) for random blocks. */
function fillRandom(out: Uint8Array, seed: number): void {
  // murmur3's finaliser, so nearby seeds start far apart
  let x = seed >>> 0;
  x = Math.imul(x ^ (x >>> 16), 0x85ebca6b);
  x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35);
  x = (x ^ (x >>> 16)) >>> 0 || 0x9e3779b9;
  const w = new Uint32Array(out.buffer, out.byteOffset, out.length >>> 2);
  for (let i = 0; i < w.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    w[i] = x;
  }
  for (let i = w.length * 4; i < out.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 255;
  }
}

/**
 * Random q8_0 / q4_0 blocks for `rows` rows of `cols` values with std about `std`: uniform
 * int8 in [-127, 127] (std 73.3 d) or uniform nibbles (std 4.6 d), one f16 scale per block.
 */
export function randomBlocks(quant: 'q8_0' | 'q4_0', rows: number, cols: number, std: number, seed: number): Uint8Array {
  const per = quant === 'q8_0' ? 34 : 18;
  const nb = (rows * cols) / 32;
  const out = new Uint8Array(nb * per);
  fillRandom(out, seed);
  const dBits = f32ToF16Bits(quant === 'q8_0' ? std / 73.3 : std / 4.6);
  for (let b = 0; b < nb; b++) {
    const o = b * per;
    out[o] = dBits & 255;
    out[o + 1] = dBits >>> 8;
    if (quant === 'q8_0') for (let j = 2; j < per; j++) if (out[o + j] === 128) out[o + j] = 0; // -128 is outside q8_0's range
  }
  return out;
}

/** The seed of one expert matrix's random blocks (shared by the GGUF and safetensors synths, so both hold the same experts). */
export function synthExpertSeed(seed: number, layer: number, which: 'gate' | 'up' | 'down', expert: number): number {
  return (seed * 0x3c6ef372 + layer * 4099 + { gate: 1, up: 2, down: 3 }[which] * 131 + expert * 7919 + 1) >>> 0;
}

/** A synth writer's shape, checked: the real-size config and the skeleton (everything but the experts at full size, experts 32 wide, seeded). */
export function synthSkeleton(
  shapeName: string,
  opts: { layers?: number; seed?: number; context?: number; override?: Record<string, unknown> },
): { shape: SynthShape; layers: number; seed: number; real: ModelConfig; skel: MoETransformerLM } {
  const shape = (SYNTH_SHAPES as Record<string, SynthShape>)[shapeName];
  if (!shape) throw new Error(`synth: unknown shape "${shapeName}" (known: ${Object.keys(SYNTH_SHAPES).join(', ')})`);
  const layers = opts.layers ?? shape.defaultLayers;
  if (!Number.isInteger(layers) || layers < 1 || layers > shape.realLayers) throw new Error(`synth: layers must be an integer in [1, ${shape.realLayers}], got ${layers}`);
  const seed = opts.seed ?? 0;
  const full = { ...shape.config, vocab_size: 256, num_hidden_layers: layers, max_position_embeddings: opts.context ?? 1024, ...opts.override };
  const real = parseModelConfig(full, `synth ${shapeName}`);
  const skel = new MoETransformerLM(parseModelConfig({ ...full, moe_intermediate_size: 32, initializer_range: 0.02 }), seed).eval();
  return { shape, layers, seed, real, skel };
}

/** Write a synthetic model of `shape` as GGUF (see the file comment); streams experts, never the whole file in memory. */
export function writeSynthGGUF(shapeName: string, out: string, opts: SynthOptions = {}): SynthReport {
  const quant = opts.quant ?? 'q8_0';
  if (quant !== 'q8_0' && quant !== 'q4_0') throw new Error(`synth: quant must be q8_0 or q4_0, got ${JSON.stringify(quant)}`);
  const { shape, layers, seed, real, skel } = synthSkeleton(shapeName, opts);
  const fe = real.moe_intermediate_size;
  const d = real.hidden_size;
  const E = real.num_local_experts;
  const tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'moe-ts-synth-'));
  try {
    const skelFile = path.join(tmpDir, 'skeleton.gguf');
    exportGGUF(skel, new ByteTokenizer(), skelFile, { quant, arch: shape.arch, strictQuant: false });
    const f = GGUFFile.open(skelFile);
    try {
      const meta = new Map<string, GGUFValue>(f.metadata);
      for (const k of ['feed_forward_length', 'expert_feed_forward_length']) if (meta.has(`${shape.arch}.${k}`)) meta.set(`${shape.arch}.${k}`, gguf('u32', fe));
      meta.set('general.name', gguf('string', `moe-ts synthetic ${shapeName} (${layers} layers, ${quant}, seed ${seed})`));
      const qtype = quant === 'q8_0' ? 'Q8_0' : 'Q4_0';
      const isExp = (n: string): RegExpMatchArray | null => n.match(/^blk\.(\d+)\.ffn_(gate|up|down)_exps\.weight$/);
      const infos = [...f.tensors.values()].sort((a, b) => a.offset - b.offset);
      const headers: GGUFTensorHeader[] = infos.map((t) => {
        const m = isExp(t.name);
        if (!m) return { name: t.name, ne: t.ne, type: t.type.name };
        return { name: t.name, ne: m[2] === 'down' ? [fe, d, E] : [d, fe, E], type: qtype };
      });
      let expertBytes = 0;
      let params = 0;
      const bytes = writeGGUFStreamSync(out, meta, headers, (i, emit) => {
        const t = infos[i];
        const m = isExp(t.name);
        params += headers[i].ne.reduce((a, b) => a * b, 1);
        if (!m) return emit(f.readRaw(t.name));
        const [rows, cols] = m[2] === 'down' ? [d, fe] : [fe, d];
        const std = 1 / Math.sqrt(cols);
        for (let e = 0; e < E; e++) {
          const blocks = randomBlocks(quant, rows, cols, std, synthExpertSeed(seed, Number(m[1]), m[2] as 'gate' | 'up' | 'down', e));
          expertBytes += blocks.length;
          emit(blocks);
        }
      });
      return { path: out, arch: shape.arch, quant, layers, bytes, expertBytes, params };
    } finally {
      f.close();
    }
  } finally {
    fs.rmSync(tmpDir, { recursive: true, force: true });
  }
}
