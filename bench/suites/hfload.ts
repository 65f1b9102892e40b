/**
 * Hugging Face checkpoint load (issue 11): a Mixtral-layout model directory of at least 2 GB
 * (F32, and the same model in BF16) is generated into a temp dir by streaming its tensors to disk
 * (the generator never holds the model), then `fromPretrained` loads it in a fresh child process;
 * each row reports the load time, the read rate and the child's peak RSS against the size of the
 * float32 model it builds (BF16 rows: twice the layers, so that file passes 2 GB as well). The
 * directory is deleted afterwards. --quick uses a ~20 MB model.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Rng } from '../../src/tensor/random.js';
import type { Column, Row, SuiteOptions } from '../lib/suite.js';

export const name = 'hfload';
export const description = 'fromPretrained on a generated >= 2 GB Mixtral-layout directory (F32 and BF16): load time, read rate, peak RSS vs the float32 model';

export const columns: Column[] = [
  { key: 'case', header: 'case' },
  { key: 'fileGB', header: 'file GB' },
  { key: 'params', header: 'params' },
  { key: 'loadS', header: 'load s' },
  { key: 'readMBs', header: 'read MB/s' },
  { key: 'peakRssGB', header: 'peak RSS GB' },
  { key: 'modelGB', header: 'f32 model GB' },
  { key: 'peakOverModel', header: 'peak / model' },
  { key: 'status', header: 'status' },
];

/** Mixtral dims: full ~556M parameters (2.2 GB in F32); quick ~5M. */
export function benchConfig(quick: boolean): Record<string, number> {
  return quick
    ? { vocab_size: 4096, hidden_size: 256, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, intermediate_size: 512, num_local_experts: 4, num_experts_per_tok: 2 }
    : { vocab_size: 32000, hidden_size: 1024, num_hidden_layers: 9, num_attention_heads: 16, num_key_value_heads: 8, intermediate_size: 2048, num_local_experts: 8, num_experts_per_tok: 2 };
}

/** The tensors of a Mixtral checkpoint with config `c` (per-expert layout, untied lm_head). */
export function mixtralTensors(c: Record<string, number>): [string, number[]][] {
  const d = c.hidden_size;
  const hd = d / c.num_attention_heads;
  const out: [string, number[]][] = [['model.embed_tokens.weight', [c.vocab_size, d]]];
  for (let i = 0; i < c.num_hidden_layers; i++) {
    const L = `model.layers.${i}.`;
    out.push([`${L}input_layernorm.weight`, [d]], [`${L}post_attention_layernorm.weight`, [d]]);
    out.push([`${L}self_attn.q_proj.weight`, [c.num_attention_heads * hd, d]], [`${L}self_attn.k_proj.weight`, [c.num_key_value_heads * hd, d]]);
    out.push([`${L}self_attn.v_proj.weight`, [c.num_key_value_heads * hd, d]], [`${L}self_attn.o_proj.weight`, [d, c.num_attention_heads * hd]]);
    out.push([`${L}block_sparse_moe.gate.weight`, [c.num_local_experts, d]]);
    for (let e = 0; e < c.num_local_experts; e++) {
      const E = `${L}block_sparse_moe.experts.${e}.`;
      out.push([`${E}w1.weight`, [c.intermediate_size, d]], [`${E}w3.weight`, [c.intermediate_size, d]], [`${E}w2.weight`, [d, c.intermediate_size]]);
    }
  }
  out.push(['model.norm.weight', [d]], ['lm_head.weight', [c.vocab_size, d]]);
  return out;
}

/**
 * Write config.json and model.safetensors for `c` into `dir`, streaming each tensor in 4 MB
 * chunks of seeded values (norm weights 1, the rest uniform in ±0.02). Returns the file size.
 */
export function writeCheckpoint(dir: string, c: Record<string, number>, dtype: 'F32' | 'BF16', seed: number): number {
  const item = dtype === 'F32' ? 4 : 2;
  const tensors = mixtralTensors(c);
  const header: Record<string, unknown> = { __metadata__: { format: 'pt' } };
  let off = 0;
  for (const [n, shape] of tensors) {
    const bytes = shape.reduce((a, b) => a * b, 1) * item;
    header[n] = { dtype, shape, data_offsets: [off, off + bytes] };
    off += bytes;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(
    path.join(dir, 'config.json'),
    JSON.stringify({ architectures: ['MixtralForCausalLM'], model_type: 'mixtral', max_position_embeddings: 4096, rms_norm_eps: 1e-5, rope_theta: 1e6, tie_word_embeddings: false, ...c }),
  );
  const fd = fs.openSync(path.join(dir, 'model.safetensors'), 'w');
  try {
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(json.length));
    fs.writeSync(fd, len);
    fs.writeSync(fd, json);
    const rng = new Rng(seed);
    const CH = 1 << 20; // elements per chunk
    const f = new Float32Array(CH);
    const bf = new Uint16Array(CH);
    const u32 = new Uint32Array(f.buffer);
    for (const [n, shape] of tensors) {
      let left = shape.reduce((a, b) => a * b, 1);
      const norm = n.endsWith('layernorm.weight') || n === 'model.norm.weight';
      while (left > 0) {
        const k = Math.min(CH, left);
        const part = f.subarray(0, k);
        if (norm) part.fill(1);
        else rng.fillUniform(part, -0.02, 0.02);
        if (dtype === 'F32') fs.writeSync(fd, new Uint8Array(f.buffer, 0, k * 4));
        else {
          for (let i = 0; i < k; i++) bf[i] = u32[i] >>> 16; // truncation is fine for generated weights
          fs.writeSync(fd, new Uint8Array(bf.buffer, 0, k * 2));
        }
        left -= k;
      }
    }
  } finally {
    fs.closeSync(fd);
  }
  return 8 + json.length + off;
}

const here = path.dirname(fileURLToPath(import.meta.url));

/** Load `dir` with fromPretrained in a fresh process: wall time and that process's peak RSS. */
function loadInChild(dir: string): { loadMs: number; maxRss: number; params: number } | { error: string } {
  const mod = pathToFileURL(path.resolve(here, '..', '..', 'src', 'io', 'hf', 'pretrained.js')).href;
  const script = `
    const { fromPretrained } = await import(${JSON.stringify(mod)});
    const t0 = performance.now();
    const { model } = fromPretrained(${JSON.stringify(dir)});
    const loadMs = performance.now() - t0;
    let params = 0;
    for (const [, p] of model.namedParameters()) params += p.size;
    console.log(JSON.stringify({ loadMs, maxRss: process.resourceUsage().maxRSS * 1024, params }));`;
  const r = spawnSync(process.execPath, ['--max-old-space-size=8192', '--input-type=module', '-e', script], { encoding: 'utf8', timeout: 1_800_000 });
  if (r.status !== 0) return { error: (r.stderr || r.error?.message || `exit ${r.status}`).trim().split('\n').slice(-1)[0] };
  return JSON.parse(r.stdout.trim().split('\n').slice(-1)[0]);
}

export async function run(opts: SuiteOptions): Promise<Row[]> {
  const rows: Row[] = [];
  for (const dtype of ['F32', 'BF16'] as const) {
    // BF16 with twice the layers, so that file is past 2 GB too (and its float32 model twice that)
    const base0 = benchConfig(opts.quick);
    const c = dtype === 'F32' ? base0 : { ...base0, num_hidden_layers: 2 * base0.num_hidden_layers };
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'moe-ts-hfload-'));
    try {
      opts.log(`hfload: writing a ${dtype} checkpoint into ${dir}`);
      const size = writeCheckpoint(dir, c, dtype, opts.seed);
      opts.log(`hfload: ${(size / 1e9).toFixed(2)} GB written; loading`);
      const r = loadInChild(dir);
      const base = { case: `mixtral d${c.hidden_size} L${c.num_hidden_layers} E${c.num_local_experts} ${dtype}`, fileGB: +(size / 1e9).toFixed(2) };
      if ('error' in r) rows.push({ ...base, status: `error: ${r.error}` });
      else {
        const modelBytes = r.params * 4;
        rows.push({
          ...base,
          params: `${(r.params / 1e6).toFixed(0)}M`,
          loadS: +(r.loadMs / 1000).toFixed(1),
          readMBs: Math.round(size / 1e6 / (r.loadMs / 1000)),
          peakRssGB: +(r.maxRss / 1e9).toFixed(2),
          modelGB: +(modelBytes / 1e9).toFixed(2),
          peakOverModel: +(r.maxRss / modelBytes).toFixed(2),
          status: opts.quick || size >= 2e9 ? 'ok' : 'below 2 GB',
        });
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }
  return rows;
}
