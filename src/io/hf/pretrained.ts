/**
 * Hugging Face model directories in and out: `fromPretrained(dir)` reads config.json (v4 and v5
 * field forms) and model.safetensors or its shards, tensor by tensor (each checked for name and
 * shape, converted to float32 and copied into the model's parameter in place: the model is never
 * held twice); `savePretrained(model, dir)` writes config.json, safetensors in the per-expert
 * layout (sharded above a size, with the index) and `{"format": "pt"}` metadata.
 */
import { loadHfTokenizerFiles, saveHfTokenizerFiles, HF_TOKENIZER_FILES } from '../hf-tokenizer.js';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { MoETransformerLM } from '../../models/transformer.js';
import { parseModelConfig, ConfigError, type ModelConfig } from '../../models/config.js';
import { ROPE_TYPES } from '../../models/rope.js';
import { fromFloat32, type DType } from '../../tensor/dtype.js';
import { SafetensorsCheckpoint, INDEX_FILE, SINGLE_FILE } from '../safetensors-index.js';
import { serializeSafetensors, quoteName, type TensorEntry } from '../safetensors.js';
import { writeFileAtomicSync, writeJsonAtomicSync } from '../atomic.js';
import { dequantFp8Blocks, dequantMxfp4, entryToFloat32 } from '../quant.js';
import { saveTokenizer } from '../tokenizer.js';
import { loadTokenizerFile, type Tokenizer } from '../../data/tokenizer/index.js';
import { archFor, archForModel, HfFormatError, type ArchSpec, type HfConfig } from './archs.js';

export { HfFormatError } from './archs.js';

const MAX_CONFIG_BYTES = 4_000_000;

/** What fromPretrained returns: the model (eval mode), its moe-ts config and the HF config it came from. */
export interface PretrainedModel {
  model: MoETransformerLM;
  config: ModelConfig;
  /** The Hugging Face model_type it was read as. */
  modelType: string;
  /** The config.json as read. */
  hfConfig: HfConfig;
  dir: string;
  /** With `skipExperts`: where each MoE layer's routed expert matrices lie in the shards (null for layers without experts). */
  expertLocations?: (HfExpertLayer | null)[];
}

/** One stored expert matrix, [rows, cols] row-major ([out, in], as the checkpoint holds it), at a byte offset of a shard. */
export interface HfExpertMatrix {
  /** Tensor it belongs to (a fused 3-D tensor holds every expert's). */
  tensor: string;
  /** Shard file path. */
  file: string;
  /** Absolute byte offset of this expert's matrix in the shard. */
  offset: number;
  /** Stored safetensors dtype code: F32, F16 or BF16. */
  code: 'F32' | 'F16' | 'BF16';
  rows: number;
  cols: number;
}

/** A MoE layer's routed experts in the shards: gate (w1), up (w3) and down (w2) matrix of each expert. */
export interface HfExpertLayer {
  E: number;
  topK: number;
  w1: HfExpertMatrix[];
  w3: HfExpertMatrix[];
  w2: HfExpertMatrix[];
}

function readJsonFile(file: string, what: string): unknown {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch (e) {
    throw new HfFormatError(`${file}: cannot read ${what}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  if (!st.isFile()) throw new HfFormatError(`${file}: not a regular file`);
  if (st.size > MAX_CONFIG_BYTES) throw new HfFormatError(`${file}: ${st.size} bytes exceeds the ${MAX_CONFIG_BYTES}-byte limit for ${what}`);
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw new HfFormatError(`${file}: not valid JSON: ${quoteName((e as Error).message, 200).slice(1, -1)}`);
  }
}

/** The fields every architecture shares, from either the v4 or the v5 form (rope_theta/rope_scaling vs rope_parameters). */
function commonFields(hf: HfConfig): Record<string, unknown> {
  const n = (k: string): unknown => (hf[k] === null ? undefined : hf[k]);
  if (hf.hidden_act !== undefined && hf.hidden_act !== 'silu') throw new HfFormatError(`config.json field hidden_act ${JSON.stringify(hf.hidden_act)} is not supported (supported: silu)`);
  if (hf.partial_rotary_factor !== undefined && hf.partial_rotary_factor !== 1)
    throw new HfFormatError(`config.json field partial_rotary_factor ${JSON.stringify(hf.partial_rotary_factor)} is not supported (only 1)`);
  let theta = n('rope_theta');
  let scaling = n('rope_scaling') as Record<string, unknown> | undefined;
  const rp = n('rope_parameters') as Record<string, unknown> | undefined;
  if (rp && typeof rp === 'object') {
    // v5: one dict with rope_type, rope_theta and the type's own parameters
    if (rp.rope_theta !== undefined) theta = rp.rope_theta;
    const { rope_theta: _t, ...rest } = rp;
    scaling = rest;
  }
  if (scaling) {
    const t = scaling.rope_type ?? scaling.type ?? 'default';
    if (!(ROPE_TYPES as readonly unknown[]).includes(t)) throw new HfFormatError(`config.json rope type ${JSON.stringify(t)} is not supported (supported: ${ROPE_TYPES.join(', ')})`);
    if (t === 'default') scaling = undefined;
    else {
      const { type: _legacy, ...s } = scaling;
      scaling = { ...s, rope_type: t };
    }
  }
  const out: Record<string, unknown> = {
    vocab_size: n('vocab_size'),
    hidden_size: n('hidden_size'),
    num_hidden_layers: n('num_hidden_layers'),
    num_attention_heads: n('num_attention_heads'),
    num_key_value_heads: n('num_key_value_heads'),
    head_dim: n('head_dim'),
    max_position_embeddings: n('max_position_embeddings'),
    rope_theta: theta ?? 10000,
    rope_scaling: scaling,
    rms_norm_eps: n('rms_norm_eps') ?? 1e-6,
    tie_word_embeddings: hf.tie_word_embeddings === true,
    initializer_range: n('initializer_range') ?? 0.02,
  };
  for (const k of ['vocab_size', 'hidden_size', 'num_hidden_layers', 'num_attention_heads', 'max_position_embeddings']) {
    if (out[k] === undefined) throw new HfFormatError(`config.json: field ${k} missing`);
  }
  return out;
}

/** The moe-ts ModelConfig a Hugging Face config.json describes. */
export function modelConfigFromHf(hf: HfConfig, where = 'config.json'): { config: ModelConfig; arch: ArchSpec } {
  if (typeof hf !== 'object' || hf === null || Array.isArray(hf)) throw new HfFormatError(`${where}: not a JSON object`);
  const arch = archFor(hf.model_type);
  if (arch.normalize) hf = arch.normalize(hf);
  const common = commonFields(hf);
  const specific = arch.toModelConfig(hf, common);
  const raw: Record<string, unknown> = {
    ...common,
    router_type: arch.routerType ?? 'topk',
    router_z_loss_coef: 0,
    aux_loss_normalization: 'all-layers-tokens',
    dispatch: 'dropless',
    ...specific,
  };
  for (const k of Object.keys(raw)) if (raw[k] === undefined) delete raw[k];
  try {
    return { config: parseModelConfig(raw, `${where} (as a moe-ts model config)`), arch };
  } catch (e) {
    if (e instanceof ConfigError) throw new HfFormatError(e.message);
    throw e;
  }
}

function transposeInto(dst: Float32Array, dOff: number, src: Float32Array, sOff: number, rows: number, cols: number): void {
  // src [rows, cols] -> dst [cols, rows]
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) dst[dOff + c * rows + r] = src[sOff + r * cols + c];
}

const shapeStr = (s: readonly number[]): string => `[${s.join(', ')}]`;

/** Tensor reader over a checkpoint: checks shapes, dequantises, tracks which tensors were used. */
class Source {
  readonly used = new Set<string>();
  constructor(
    readonly ck: SafetensorsCheckpoint,
    readonly block: [number, number],
  ) {}
  has(name: string): boolean {
    return this.ck.has(name);
  }
  get(name: string, shape: readonly number[]): Float32Array {
    const e = this.ck.entry(name);
    if (!e) throw new HfFormatError(`${this.ck.dir}: missing tensor ${quoteName(name)} (expected shape ${shapeStr(shape)})`);
    if (e.shape.length !== shape.length || e.shape.some((d, i) => d !== shape[i])) {
      throw new HfFormatError(`${this.ck.dir}: tensor ${quoteName(name)} has shape ${shapeStr(e.shape)}, expected ${shapeStr(shape)}`);
    }
    this.used.add(name);
    const t = this.ck.read(name);
    try {
      const sname = `${name}_scale_inv`;
      if (t.code === 'F8_E4M3' && this.ck.has(sname)) {
        this.used.add(sname);
        return dequantFp8Blocks(t, this.ck.read(sname), this.block, name);
      }
      return entryToFloat32(t, name);
    } catch (err) {
      throw new HfFormatError(`${this.ck.dir}: ${(err as Error).message}`);
    }
  }
}

/** MXFP4 `${name}_blocks` + `${name}_scales` dequantised, checked against the dequantised shape. */
function getMxfp4(src: Source, name: string, shape: readonly number[]): Float32Array {
  const bn = `${name}_blocks`;
  const sn = `${name}_scales`;
  const be = src.ck.entry(bn);
  const se = src.ck.entry(sn);
  if (!be || !se) throw new HfFormatError(`${src.ck.dir}: missing tensor ${quoteName(be ? sn : bn)}`);
  src.used.add(bn);
  src.used.add(sn);
  let r: { data: Float32Array; shape: number[] };
  try {
    r = dequantMxfp4(src.ck.read(bn), src.ck.read(sn), name);
  } catch (err) {
    throw new HfFormatError(`${src.ck.dir}: ${(err as Error).message}`);
  }
  if (r.shape.length !== shape.length || r.shape.some((d, i) => d !== shape[i])) {
    throw new HfFormatError(`${src.ck.dir}: tensor ${quoteName(bn)} dequantises to shape ${shapeStr(r.shape)}, expected ${shapeStr(shape)}`);
  }
  return r.data;
}

function fillLayerExperts(src: Source, base: string, arch: ArchSpec, w1: Float32Array, w3: Float32Array, w2: Float32Array, E: number, d: number, f: number): void {
  const names = arch.expertNames;
  const fu = arch.fused ?? { gateUp: 'experts.gate_up_proj', down: 'experts.down_proj' };
  if (src.has(`${base}.${fu.gateUp}`) || fu.only) {
    // fused 3-D layout (recent transformers; GraniteMoE): gate+up [E, 2f, d] (gate rows first), down [E, d, f]
    const gu = src.get(`${base}.${fu.gateUp}`, [E, 2 * f, d]);
    const dn = src.get(`${base}.${fu.down}`, [E, d, f]);
    for (let e = 0; e < E; e++) {
      transposeInto(w1, e * d * f, gu, e * 2 * f * d, f, d);
      transposeInto(w3, e * d * f, gu, e * 2 * f * d + f * d, f, d);
      transposeInto(w2, e * f * d, dn, e * d * f, d, f);
    }
    return;
  }
  const [g, u, dw] = names;
  for (let e = 0; e < E; e++) {
    transposeInto(w1, e * d * f, src.get(`${base}.experts.${e}.${g}.weight`, [f, d]), 0, f, d);
    transposeInto(w3, e * d * f, src.get(`${base}.experts.${e}.${u}.weight`, [f, d]), 0, f, d);
    transposeInto(w2, e * f * d, src.get(`${base}.experts.${e}.${dw}.weight`, [d, f]), 0, d, f);
  }
}

const OFFLOAD_CODES = new Set(['F32', 'F16', 'BF16']);

/**
 * Where a layer's routed experts lie, per expert (per-expert or fused 3-D layout, as
 * fillLayerExperts reads them), without reading them: shapes and dtypes are checked and the
 * tensors marked used. Experts stored otherwise (fp8 blocks, MXFP4, architecture-specific
 * tensors) cannot be read at an offset as plain matrices: a one-line error says so.
 */
function locateLayerExperts(src: Source, base: string, arch: ArchSpec, E: number, topK: number, d: number, f: number): HfExpertLayer {
  const at = (name: string, shape: readonly number[], rows: number, cols: number, elemOffset: number): HfExpertMatrix => {
    const e = src.ck.entry(name);
    if (!e) throw new HfFormatError(`${src.ck.dir}: missing tensor ${quoteName(name)} (expected shape ${shapeStr(shape)})`);
    if (e.shape.length !== shape.length || e.shape.some((x, i) => x !== shape[i]))
      throw new HfFormatError(`${src.ck.dir}: tensor ${quoteName(name)} has shape ${shapeStr(e.shape)}, expected ${shapeStr(shape)}`);
    if (!OFFLOAD_CODES.has(e.code) || src.ck.has(`${name}_scale_inv`))
      throw new HfFormatError(`${src.ck.dir}: tensor ${quoteName(name)} is ${e.code}; offloaded experts must be stored as F32, F16 or BF16`);
    src.used.add(name);
    const item = e.code === 'F32' ? 4 : 2;
    return { tensor: name, file: src.ck.pathOf(name)!, offset: e.begin + elemOffset * item, code: e.code as HfExpertMatrix['code'], rows, cols };
  };
  const out: HfExpertLayer = { E, topK, w1: [], w3: [], w2: [] };
  const fu = arch.fused ?? { gateUp: 'experts.gate_up_proj', down: 'experts.down_proj' };
  const fused = src.has(`${base}.${fu.gateUp}`) || fu.only;
  const [g, u, dw] = arch.expertNames;
  for (let e = 0; e < E; e++) {
    if (fused) {
      // gate+up [E, 2f, d] (gate rows first), down [E, d, f]: each expert's rows are contiguous
      out.w1.push(at(`${base}.${fu.gateUp}`, [E, 2 * f, d], f, d, e * 2 * f * d));
      out.w3.push(at(`${base}.${fu.gateUp}`, [E, 2 * f, d], f, d, e * 2 * f * d + f * d));
      out.w2.push(at(`${base}.${fu.down}`, [E, d, f], d, f, e * d * f));
    } else {
      out.w1.push(at(`${base}.experts.${e}.${g}.weight`, [f, d], f, d, 0));
      out.w3.push(at(`${base}.experts.${e}.${u}.weight`, [f, d], f, d, 0));
      out.w2.push(at(`${base}.experts.${e}.${dw}.weight`, [d, f], d, f, 0));
    }
  }
  return out;
}

/**
 * Rows of an interleaved-RoPE checkpoint in moe-ts (half-split) order: within each RoPE segment
 * of width R, moe-ts row m is checkpoint row 2m (m < R/2) or 2(m - R/2) + 1. q-projections hold
 * one segment per head after its nope part; kv_a_proj_with_mqa one after the latent.
 */
function ropeSegments(name: string, c: ModelConfig): number[] | null {
  const R = c.qk_rope_head_dim;
  const nope = c.qk_nope_head_dim;
  if (c.kv_lora_rank === undefined || R === undefined || nope === undefined) return null;
  if (/self_attn\.(q_proj|q_b_proj)\.(weight|bias)$/.test(name)) return Array.from({ length: c.num_attention_heads }, (_, h) => h * (nope + R) + nope);
  if (/self_attn\.kv_a_proj_with_mqa\.(weight|bias)$/.test(name)) return [c.kv_lora_rank];
  return null;
}

function permuteRopeRows(data: Float32Array, rowLen: number, starts: number[], R: number, toMoe: boolean): Float32Array {
  const out = data.slice();
  const half = R / 2;
  for (const s of starts) {
    for (let m = 0; m < R; m++) {
      const src = m < half ? 2 * m : 2 * (m - half) + 1;
      const [from, to] = toMoe ? [s + src, s + m] : [s + m, s + src];
      out.set(data.subarray(from * rowLen, (from + 1) * rowLen), to * rowLen);
    }
  }
  return out;
}

/** Load weights from a checkpoint into a freshly built model, in place. */
function loadWeights(model: MoETransformerLM, arch: ArchSpec, src: Source, interleaved: boolean, skip: { config: ModelConfig; layers: (HfExpertLayer | null)[] } | null = null): void {
  const c = model.config;
  const params = new Map(model.namedParameters());
  const done = new Set<string>();
  const direct = (moeName: string, hfName: string): void => {
    const p = params.get(moeName)!;
    let v = src.get(hfName, p.shape);
    const seg = interleaved ? ropeSegments(moeName, c) : null;
    if (seg) v = permuteRopeRows(v, p.shape.length > 1 ? p.shape[1] : 1, seg, c.qk_rope_head_dim!, true);
    p.data.set(v);
    done.add(moeName);
  };
  const transposed = (moeName: string, hfName: string): void => {
    const p = params.get(moeName)!;
    const [r, cc] = p.shape; // moe-ts [in, out]; the checkpoint holds [out, in]
    transposeInto(p.data, 0, src.get(hfName, [cc, r]), 0, cc, r);
    done.add(moeName);
  };
  direct('embed_tokens.weight', 'model.embed_tokens.weight');
  direct('norm.weight', 'model.norm.weight');
  if (model.lm_head) direct('lm_head.weight', 'lm_head.weight');
  else if (src.has('lm_head.weight')) src.used.add('lm_head.weight'); // tied: the file may still carry a copy
  model.layers.forEach((layer, i) => {
    const L = `layers.${i}.`;
    const HL = `model.layers.${i}.`;
    const moe = layer.block_sparse_moe;
    let prefix = arch.moePrefix;
    if (moe) {
      const cands = [arch.moePrefix, ...(arch.moePrefixAliases ?? [])];
      const rn = arch.routerName ?? 'gate';
      prefix = cands.find((p) => src.has(`${HL}${p}.${rn}.weight`)) ?? arch.moePrefix;
      direct(`${L}block_sparse_moe.router.gate.weight`, `${HL}${prefix}.${rn}.weight`);
      if (params.has(`${L}block_sparse_moe.router.gate.bias`)) direct(`${L}block_sparse_moe.router.gate.bias`, `${HL}${prefix}.${rn}.bias`);
      const E = c.num_local_experts;
      const f = c.moe_intermediate_size;
      const EP = `${L}block_sparse_moe.experts.`;
      const w = (n: string) => params.get(`${EP}${n}`)!;
      if (skip) {
        // offloading: the placeholder experts keep their init; the real ones stay in the shards
        if (arch.expertIO) throw new HfFormatError(`${arch.modelType}: its experts are stored in an architecture-specific layout and cannot be offloaded`);
        skip.layers[i] = locateLayerExperts(src, `${HL}${prefix}`, arch, E, moe.topK, c.hidden_size, skip.config.moe_intermediate_size);
        for (const [n] of params) if (n.startsWith(EP)) done.add(n);
      } else if (arch.expertIO) {
        const bank: Record<string, { data: Float32Array; shape: readonly number[] }> = {};
        for (const [n, p] of params) if (n.startsWith(EP)) bank[n.slice(EP.length)] = p;
        arch.expertIO.load({ get: (n, sh) => src.get(n, sh), has: (n) => src.has(n), getMxfp4: (n, sh) => getMxfp4(src, n, sh) }, `${HL}${prefix}`, bank);
        for (const n of Object.keys(bank)) done.add(EP + n);
      } else {
        fillLayerExperts(src, `${HL}${prefix}`, arch, w('w1').data, w('w3').data, w('w2').data, E, c.hidden_size, f);
        for (const n of ['w1', 'w3', 'w2']) done.add(`${EP}${n}`);
      }
    }
    if (moe?.shared) {
      if (!arch.sharedName) throw new HfFormatError(`${arch.modelType}: has no ungated shared experts`);
      const [g, u, dn] = ['gate_proj', 'up_proj', 'down_proj'];
      transposed(`${L}block_sparse_moe.shared.w1`, `${HL}${prefix}.${arch.sharedName}.${g}.weight`);
      transposed(`${L}block_sparse_moe.shared.w3`, `${HL}${prefix}.${arch.sharedName}.${u}.weight`);
      transposed(`${L}block_sparse_moe.shared.w2`, `${HL}${prefix}.${arch.sharedName}.${dn}.weight`);
    }
    if (moe) {
      for (const [bname, buf] of moe.router.namedBuffers()) {
        const hfName = `${HL}${prefix}.${arch.routerName ?? 'gate'}.${bname}`;
        buf.data.set(src.get(hfName, buf.shape));
      }
    }
    for (const [name] of params) {
      if (!name.startsWith(L) || done.has(name)) continue;
      const rest = name.slice(L.length);
      if (rest.startsWith('shared_expert')) direct(name, `${HL}${prefix}.${rest}`);
      else if (rest.startsWith('block_sparse_moe.')) throw new HfFormatError(`${arch.modelType}: no Hugging Face tensor for moe-ts parameter ${name}`);
      else direct(name, HL + (arch.rename?.(rest) ?? rest));
    }
  });
  for (const [name] of params) if (!done.has(name)) throw new HfFormatError(`${arch.modelType}: parameter ${name} was not loaded`);
  const extra = src.ck.names().filter((n) => !src.used.has(n) && !n.endsWith('.rotary_emb.inv_freq'));
  if (extra.length > 0) {
    throw new HfFormatError(
      `${src.ck.dir}: ${extra.length} unexpected tensor(s) for a ${arch.modelType} model with this config.json, e.g. ${extra
        .slice(0, 3)
        .map((n) => quoteName(n))
        .join(', ')}`,
    );
  }
}

/** Options of fromPretrained. */
export interface FromPretrainedOptions {
  /** Seed for the (overwritten) initial weights and any later random choice; default 0. */
  seed?: number;
  /**
   * Leave the routed experts in the shards (their shapes and dtypes are still checked): the model
   * gets width-1 placeholder experts, `expertLocations` says where the real ones lie (expert
   * offloading, src/infer/offload.ts); `config` keeps the real expert width.
   */
  skipExperts?: boolean;
}

/** Read a Hugging Face model directory into a moe-ts model (eval mode). */
export function fromPretrained(dir: string, opts: FromPretrainedOptions = {}): PretrainedModel {
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw new HfFormatError(`${dir}: not a directory (expected a Hugging Face model directory with config.json)`);
  const cfgFile = path.join(dir, 'config.json');
  const hf = readJsonFile(cfgFile, 'a model config') as HfConfig;
  const { config, arch } = modelConfigFromHf(hf, cfgFile);
  const q = hf.quantization_config as { quant_method?: unknown; weight_block_size?: unknown } | undefined;
  let block: [number, number] = [128, 128];
  if (q && typeof q === 'object') {
    if (q.quant_method !== 'fp8') throw new HfFormatError(`${cfgFile}: quantization_config.quant_method ${JSON.stringify(q.quant_method)} is not supported (supported: fp8 block-scaled)`);
    const b = q.weight_block_size;
    if (Array.isArray(b) && b.length === 2 && b.every((x) => Number.isInteger(x) && x > 0)) block = [b[0], b[1]];
  }
  const skip = opts.skipExperts && config.num_local_experts > 0 ? { config, layers: new Array<HfExpertLayer | null>(config.num_hidden_layers).fill(null) } : null;
  // skipped experts: width-1 placeholders keep the model small (only an engine with an ExpertSource computes it)
  const model = new MoETransformerLM(skip ? { ...config, moe_intermediate_size: 1 } : config, opts.seed ?? 0);
  const ck = new SafetensorsCheckpoint(dir);
  try {
    loadWeights(model, arch, new Source(ck, block), arch.ropeInterleaved?.(hf) ?? false, skip);
  } finally {
    ck.close();
  }
  model.eval();
  return { model, config, modelType: arch.modelType, hfConfig: hf, dir, ...(skip ? { expertLocations: skip.layers } : {}) };
}

/** Options of savePretrained: dtype, shard size, overwrite. */
export interface SavePretrainedOptions {
  /** Storage dtype of the weights (default float32). */
  dtype?: Extract<DType, 'float32' | 'float16' | 'bfloat16'>;
  /** Start a new shard once one would exceed this many bytes (default 2 GB). */
  maxShardBytes?: number;
  /** Replace an existing model in `dir` (default false: refuse). */
  overwrite?: boolean;
}

const TORCH_DTYPE: Record<string, string> = { float32: 'float32', float16: 'float16', bfloat16: 'bfloat16' };

/** The Hugging Face tensors of a moe-ts model, in a fixed order (per-expert layout). */
export function hfTensors(model: MoETransformerLM, arch: ArchSpec, dtype: DType = 'float32'): Map<string, TensorEntry> {
  const c = model.config;
  const out = new Map<string, TensorEntry>();
  const put = (name: string, data: Float32Array, shape: number[]): void => {
    out.set(name, { dtype, shape, data: fromFloat32(data, dtype) });
  };
  const d = c.hidden_size;
  for (const [name, p] of model.namedParameters()) {
    const shape = [...p.shape];
    if (name === 'embed_tokens.weight' || name === 'norm.weight') put(`model.${name}`, p.data, shape);
    else if (name === 'lm_head.weight') put(name, p.data, shape);
    else {
      const m = /^layers\.(\d+)\.(.*)$/.exec(name);
      if (!m) throw new HfFormatError(`${arch.modelType}: no Hugging Face name for parameter ${name}`);
      const HL = `model.layers.${m[1]}.`;
      const rest = m[2];
      const seg = arch.ropeInterleaved ? ropeSegments(name, c) : null;
      if (seg) put(HL + rest, permuteRopeRows(p.data, shape.length > 1 ? shape[1] : 1, seg, c.qk_rope_head_dim!, false), shape);
      else if (rest === 'block_sparse_moe.router.gate.weight' || rest === 'block_sparse_moe.router.gate.bias')
        put(`${HL}${arch.moePrefix}.${arch.routerName ?? 'gate'}.${rest.endsWith('bias') ? 'bias' : 'weight'}`, p.data, shape);
      else if (arch.expertIO && rest.startsWith('block_sparse_moe.experts.')) {
        if (rest !== 'block_sparse_moe.experts.w1') continue;
        const EP = `layers.${m[1]}.block_sparse_moe.experts.`;
        const bank: Record<string, { data: Float32Array; shape: readonly number[] }> = {};
        for (const [n, q] of model.namedParameters()) if (n.startsWith(EP)) bank[n.slice(EP.length)] = q;
        arch.expertIO.save(put, `${HL}${arch.moePrefix}`, bank);
      } else if (arch.fused?.only && rest.startsWith('block_sparse_moe.experts.')) {
        // written once per layer, from w1 (w3 and w2 are consumed with it)
        if (rest !== 'block_sparse_moe.experts.w1') continue;
        const P = `layers.${m[1]}.block_sparse_moe.experts.`;
        const params = new Map(model.namedParameters());
        const w1 = params.get(P + 'w1')!;
        const w3 = params.get(P + 'w3')!;
        const w2 = params.get(P + 'w2')!;
        const [E, dd, f] = w1.shape;
        const gu = new Float32Array(E * 2 * f * dd);
        const dn = new Float32Array(E * dd * f);
        for (let e = 0; e < E; e++) {
          transposeInto(gu, e * 2 * f * dd, w1.data, e * dd * f, dd, f);
          transposeInto(gu, e * 2 * f * dd + f * dd, w3.data, e * dd * f, dd, f);
          transposeInto(dn, e * dd * f, w2.data, e * f * dd, f, dd);
        }
        put(`${HL}${arch.moePrefix}.${arch.fused.gateUp}`, gu, [E, 2 * f, dd]);
        put(`${HL}${arch.moePrefix}.${arch.fused.down}`, dn, [E, dd, f]);
      } else if (rest.startsWith('block_sparse_moe.shared.')) {
        const idx = ['w1', 'w3', 'w2'].indexOf(rest.slice('block_sparse_moe.shared.'.length));
        if (idx < 0 || !arch.sharedName) throw new HfFormatError(`${arch.modelType}: no Hugging Face name for parameter ${name}`);
        const t = new Float32Array(p.size);
        transposeInto(t, 0, p.data, 0, shape[0], shape[1]);
        put(`${HL}${arch.moePrefix}.${arch.sharedName}.${['gate_proj', 'up_proj', 'down_proj'][idx]}.weight`, t, [shape[1], shape[0]]);
      } else if (rest.startsWith('block_sparse_moe.experts.')) {
        const which = rest.slice('block_sparse_moe.experts.'.length);
        const idx = ['w1', 'w3', 'w2'].indexOf(which);
        if (idx < 0) throw new HfFormatError(`${arch.modelType}: no Hugging Face name for parameter ${name}`);
        const E = shape[0];
        const [r, cc] = [shape[1], shape[2]]; // [E, d, f] or [E, f, d]
        for (let e = 0; e < E; e++) {
          const t = new Float32Array(r * cc);
          transposeInto(t, 0, p.data, e * r * cc, r, cc);
          put(`${HL}${arch.moePrefix}.experts.${e}.${arch.expertNames[idx]}.weight`, t, [cc, r]);
        }
      } else if (rest.startsWith('shared_expert')) put(`${HL}${arch.moePrefix}.${rest}`, p.data, shape);
      else if (rest.startsWith('block_sparse_moe.')) throw new HfFormatError(`${arch.modelType}: no Hugging Face name for parameter ${name}`);
      else put(HL + (arch.rename?.(rest) ?? rest), p.data, shape);
    }
  }
  void d;
  // non-trainable router state (DeepSeek-V3's e_score_correction_bias) lives next to the gate weight
  model.layers.forEach((layer, i) => {
    const moe = layer.block_sparse_moe;
    if (!moe) return;
    for (const [bname, buf] of moe.router.namedBuffers()) {
      // F32 like transformers keeps it: the bias decides the selection and must not be rounded
      out.set(`model.layers.${i}.${arch.moePrefix}.${arch.routerName ?? 'gate'}.${bname}`, { dtype: 'float32', shape: [...buf.shape], data: buf.data.slice() });
    }
  });
  return out;
}

/** The config.json object for a moe-ts model (fixed key order, so saves are byte-identical). */
export function hfConfigFor(model: MoETransformerLM, arch: ArchSpec, dtype: string): HfConfig {
  return { architectures: [arch.architecture], model_type: arch.modelType, ...arch.toHfConfig(model.config), torch_dtype: TORCH_DTYPE[dtype], transformers_version: '4.57.0' };
}

/** Write a moe-ts model as a Hugging Face model directory. Returns the files written. */
export function savePretrained(model: MoETransformerLM, dir: string, opts: SavePretrainedOptions = {}): string[] {
  const arch = archForModel(model.config);
  const dtype = opts.dtype ?? 'float32';
  const max = opts.maxShardBytes ?? 2_000_000_000;
  if (!(max > 0)) throw new HfFormatError(`savePretrained: maxShardBytes must be positive, got ${max}`);
  if (fs.existsSync(dir)) {
    if (!fs.statSync(dir).isDirectory()) throw new HfFormatError(`${dir}: exists and is not a directory`);
    const existing = fs.readdirSync(dir).filter((f) => f === 'config.json' || f.endsWith('.safetensors') || f === INDEX_FILE);
    if (existing.length > 0 && !opts.overwrite) throw new HfFormatError(`${dir} already holds a model (${existing[0]}); pass overwrite to replace it`);
  }
  fs.mkdirSync(dir, { recursive: true });
  const tensors = hfTensors(model, arch, dtype);
  const shards: Map<string, TensorEntry>[] = [new Map()];
  let size = 0;
  let total = 0;
  for (const [name, t] of tensors) {
    const b = t.data.byteLength;
    if (size > 0 && size + b > max) {
      shards.push(new Map());
      size = 0;
    }
    shards[shards.length - 1].set(name, t);
    size += b;
    total += b;
  }
  const written: string[] = [];
  const n = shards.length;
  const fileOf = (i: number): string => (n === 1 ? SINGLE_FILE : `model-${String(i + 1).padStart(5, '0')}-of-${String(n).padStart(5, '0')}.safetensors`);
  const weightMap: Record<string, string> = {};
  shards.forEach((s, i) => {
    const f = fileOf(i);
    writeFileAtomicSync(path.join(dir, f), serializeSafetensors(s, { format: 'pt' }));
    written.push(f);
    for (const name of [...s.keys()].sort()) weightMap[name] = f;
  });
  const keep = new Set(written);
  if (n > 1) {
    const sorted: Record<string, string> = {};
    for (const k of Object.keys(weightMap).sort()) sorted[k] = weightMap[k];
    writeJsonAtomicSync(path.join(dir, INDEX_FILE), { metadata: { total_size: total }, weight_map: sorted });
    written.push(INDEX_FILE);
    keep.add(INDEX_FILE);
  }
  writeJsonAtomicSync(path.join(dir, 'config.json'), hfConfigFor(model, arch, dtype));
  written.push('config.json');
  // a replaced model's stale weights would otherwise be picked up by the next load
  for (const f of fs.readdirSync(dir)) {
    if ((f.endsWith('.safetensors') || f === INDEX_FILE) && !keep.has(f)) fs.rmSync(path.join(dir, f));
  }
  return written;
}

/** The moe-ts tokenizer savePretrained writes next to the weights (HF tokenizer.json is the tokenizers integration's). */
export const MOE_TS_TOKENIZER_FILE = 'moe-ts-tokenizer.json';

/**
 * savePretrained plus the tokenizer: Hugging Face tokenizer.json + tokenizer_config.json (what
 * transformers and @huggingface/tokenizers read) when the tokenizer has that form, and the moe-ts
 * tokenizer file (exact, read first by fromPretrainedWithTokenizer) so `--model DIR` works on it.
 */
export function savePretrainedWithTokenizer(model: MoETransformerLM, tokenizer: Tokenizer, dir: string, opts: SavePretrainedOptions = {}): string[] {
  if (tokenizer.vocabSize > model.config.vocab_size) throw new HfFormatError(`tokenizer has ${tokenizer.vocabSize} tokens, model vocab_size is ${model.config.vocab_size}`);
  const hfFiles = tokenizer.toHuggingFace ? [...HF_TOKENIZER_FILES] : [];
  if (!opts.overwrite) {
    // checked before any weight is written, so a refusal leaves the directory as it was
    const clash = [...hfFiles, MOE_TS_TOKENIZER_FILE].find((f) => fs.existsSync(path.join(dir, f)));
    if (clash) throw new HfFormatError(`${path.join(dir, clash)} already exists; pass overwrite to replace it`);
  }
  const files = savePretrained(model, dir, opts);
  if (hfFiles.length > 0) saveHfTokenizerFiles(tokenizer, dir, { overwrite: true });
  saveTokenizer(path.join(dir, MOE_TS_TOKENIZER_FILE), tokenizer);
  return [...files, ...hfFiles, MOE_TS_TOKENIZER_FILE];
}

/**
 * fromPretrained plus a tokenizer: the moe-ts tokenizer file when present, else the directory's
 * Hugging Face tokenizer.json (+ tokenizer_config.json) through src/io/hf-tokenizer.ts.
 */
export function fromPretrainedWithTokenizer(dir: string, opts: FromPretrainedOptions = {}): PretrainedModel & { tokenizer: Tokenizer } {
  const p = fromPretrained(dir, opts);
  const own = path.join(dir, MOE_TS_TOKENIZER_FILE);
  if (fs.existsSync(own)) {
    let tokenizer: Tokenizer;
    try {
      tokenizer = loadTokenizerFile(own);
    } catch (e) {
      throw new HfFormatError(`${own}: ${(e as Error).message}`);
    }
    if (tokenizer.vocabSize > p.config.vocab_size) throw new HfFormatError(`${own}: tokenizer has ${tokenizer.vocabSize} tokens, model vocab_size is ${p.config.vocab_size}`);
    return { ...p, tokenizer };
  }
  if (fs.existsSync(path.join(dir, 'tokenizer.json'))) {
    const tokenizer = loadHfTokenizerFiles(dir);
    if (tokenizer.vocabSize > p.config.vocab_size) throw new HfFormatError(`${dir}/tokenizer.json: tokenizer has ${tokenizer.vocabSize} tokens, model vocab_size is ${p.config.vocab_size}`);
    return { ...p, tokenizer };
  }
  throw new HfFormatError(`${dir}: no tokenizer (tokenizer.json or moe-ts-tokenizer.json); this command needs one to turn text into tokens`);
}
