/**
 * `moe-ts convert SRC --to FORMAT OUT`: export a trained model to another format. Each format is
 * one entry of CONVERT_FORMATS (its description, the options it reads, and its writer), so a new
 * target (e.g. Hugging Face directories) plugs in without touching the command.
 */
import * as fs from 'node:fs';
import { loadModelForInference } from '../infer/index.js';
import { savePretrainedWithTokenizer } from '../io/hf/pretrained.js';
import { exportGGUF, GGUF_QUANTS, ARCH_NAMES, type GGUFQuant, type ArchName } from '../io/gguf/index.js';
import { asTransformer } from '../models/transformer.js';

export interface ConvertOptions {
  quant?: string;
  arch?: string;
  dtype?: string;
  overwrite?: boolean;
  [option: string]: unknown;
}

export interface ConvertFormat {
  description: string;
  /** Command options this format reads (others given with it are an error). */
  options: string[];
  /** Write `src` (a run / checkpoint directory or a model file) to `out`; returns a one-line summary. */
  run(src: string, out: string, o: ConvertOptions): string;
}

export const CONVERT_FORMATS: Record<string, ConvertFormat> = {
  gguf: {
    description: 'GGUF for llama.cpp (architecture chosen by what the model computes: llama, bailingmoe, qwen2moe, qwen3moe, olmoe, deepseek2)',
    options: ['quant', 'arch'],
    run(src, out, o) {
      const quant = (o.quant ?? 'f32') as GGUFQuant;
      if (!GGUF_QUANTS.includes(quant)) throw new Error(`--quant must be one of ${GGUF_QUANTS.join(', ')}, got "${o.quant}"`);
      const arch = (o.arch ?? 'auto') as ArchName | 'auto';
      if (arch !== 'auto' && !ARCH_NAMES.includes(arch)) throw new Error(`--arch must be auto or one of ${ARCH_NAMES.join(', ')}, got "${o.arch}"`);
      const { model, tokenizer } = loadModelForInference(src);
      const r = exportGGUF(asTransformer(model, 'gguf', 'convert --to gguf'), tokenizer, out, { quant, arch });
      const fb = r.fallbacks.length ? `; ${r.fallbacks.length} tensor(s) kept as f16 (rows not a multiple of 32: ${r.fallbacks.map((f) => f.name).join(', ')})` : '';
      return `wrote ${out}: ${r.arch}, ${r.quant}, ${r.tensors} tensors, vocabulary ${r.vocab}, ${(r.bytes / 1e6).toFixed(2)} MB${fb}`;
    },
  },
  hf: {
    description: 'a Hugging Face model directory (architecture chosen by semantics: Mixtral, Qwen-MoE, DeepSeek, ...)',
    options: ['dtype'],
    run(src, out, o) {
      const dtype = o.dtype ?? 'float32';
      if (!['float32', 'bfloat16', 'float16'].includes(dtype)) throw new Error(`--dtype must be one of float32, bfloat16, float16, got "${o.dtype}"`);
      const { model, tokenizer } = loadModelForInference(src);
      const files = savePretrainedWithTokenizer(asTransformer(model, 'hfExport', 'convert --to hf'), tokenizer, out, {
        dtype: dtype as 'float32' | 'bfloat16' | 'float16',
        overwrite: Boolean(o.overwrite),
      });
      return `wrote ${files.join(', ')} to ${out}`;
    },
  },
};

export function convertCommand(src: string, out: string, to: string, o: ConvertOptions, given: string[]): string {
  const fmt = Object.prototype.hasOwnProperty.call(CONVERT_FORMATS, to) ? CONVERT_FORMATS[to] : undefined;
  if (!fmt) throw new Error(`--to must be one of ${Object.keys(CONVERT_FORMATS).join(', ')}, got "${to}"`);
  for (const g of given) if (!fmt.options.includes(g)) throw new Error(`--${g} does not apply to --to ${to}`);
  if (fs.existsSync(out) && !o.overwrite) throw new Error(`${out} already exists; pass --overwrite to replace it`);
  return fmt.run(src, out, o);
}
