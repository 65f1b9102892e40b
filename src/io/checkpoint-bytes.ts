/**
 * Checkpoints without a file system (the browser, or anything holding bytes): the state.json
 * validation shared with the directory loader, a checkpoint from a model.safetensors image plus
 * its state.json, and the single-file form: one safetensors image whose __metadata__ carries the
 * trainer state (key "moe-ts.state"), which the CLI loads like a checkpoint directory.
 */
import { parseSafetensors, serializeSafetensors, type TensorEntry } from './safetensors.js';
import { toFloat32 } from '../tensor/dtype.js';
import type { StateDict } from '../nn/module.js';
import type { TokenizerJSON } from '../data/tokenizer/types.js';
import type { DatasetState } from '../data/dataset.js';
import { parseRunConfig, type RunConfig } from '../models/config.js';
import { loadTokenizer } from '../data/tokenizer/index.js';
import { z, pathString } from '../tensor/validate.js';

export const CHECKPOINT_FORMAT = 'moe-ts-checkpoint';
export const CHECKPOINT_VERSION = 1;
/** __metadata__ key of the trainer state in a single-file checkpoint. */
export const STATE_METADATA_KEY = 'moe-ts.state';

export interface TrainerState {
  format: typeof CHECKPOINT_FORMAT;
  version: number;
  step: number;
  config: RunConfig;
  tokenizer: TokenizerJSON;
  optimizerStep: number;
  dataState: DatasetState;
  /** RNG for dropout / router noise. */
  rngState: number[];
  /** Validation history so far (for reports after resume). */
  history?: unknown[];
}

export class CheckpointError extends Error {}

/** Checkpoint tensors by name, as float32. */
export type TensorData = Map<string, { data: Float32Array; shape: number[] }>;

const u32 = z.number().refine((x) => Number.isSafeInteger(x) && x >= 0 && x <= 0xffffffff);
const rng = z
  .array(u32)
  .length(4)
  .refine((v) => v.some((x) => x !== 0));
const step = z.number().refine((x) => Number.isSafeInteger(x) && x >= 0, { error: 'must be a non-negative integer' });
const historyEntry = z.looseObject({
  step,
  tokensSeen: z.number(),
  result: z.looseObject({ loss: z.number(), perplexity: z.number(), domains: z.array(z.looseObject({ domain: z.string(), loss: z.number() })) }),
});
// state.json's fields; config and tokenizer are checked by their own parsers (their own messages).
// Rules are whole phrases because a state file is read by people debugging a run, not edited.
const STATE_FIELDS = {
  step: ['must be a non-negative integer', step],
  optimizerStep: ['must be a non-negative integer', step],
  tokenizer: ['missing or not an object', z.looseObject({})],
  dataState: ['must be {rng: four 32-bit integers, step: integer >= 0}', z.looseObject({ rng, step })],
  rngState: ['must be four 32-bit unsigned integers, not all zero', rng],
} as const;

/** Validate a parsed state.json; `where` names the source in errors. */
export function parseTrainerState(value: unknown, where: string): TrainerState {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new CheckpointError(`${where}: checkpoint state must be a JSON object`);
  const raw = value as Record<string, unknown>;
  if (raw.format !== CHECKPOINT_FORMAT) throw new CheckpointError(`${where}: field format is ${JSON.stringify(raw.format)}, expected "${CHECKPOINT_FORMAT}"`);
  if (raw.version !== CHECKPOINT_VERSION) throw new CheckpointError(`${where}: unsupported checkpoint version ${JSON.stringify(raw.version)}`);
  for (const [field, [rule, schema]] of Object.entries(STATE_FIELDS)) {
    if (!schema.safeParse(raw[field]).success) throw new CheckpointError(`${where}: field ${field} ${rule}`);
  }
  let config: RunConfig;
  try {
    config = parseRunConfig(raw.config, `${where} field config`);
  } catch (e) {
    throw new CheckpointError((e as Error).message);
  }
  try {
    loadTokenizer(raw.tokenizer as TokenizerJSON);
  } catch (e) {
    throw new CheckpointError(`${where} field tokenizer: ${(e as Error).message}`);
  }
  if (raw.history !== undefined) {
    if (!Array.isArray(raw.history)) throw new CheckpointError(`${where}: field history must be an array`);
    raw.history.forEach((h, i) => {
      const r = historyEntry.safeParse(h);
      if (!r.success)
        throw new CheckpointError(`${where}: field ${pathString(['history', i, ...r.error.issues[0].path])} must be {step, tokensSeen, result: {loss, perplexity, domains: [{domain, loss}]}}`);
    });
  }
  return { ...(raw as unknown as TrainerState), config };
}

/** Parse state.json text (or bytes). */
export function parseTrainerStateText(text: string | Uint8Array, where: string): TrainerState {
  let raw: unknown;
  try {
    raw = JSON.parse(typeof text === 'string' ? text : new TextDecoder('utf-8', { fatal: true }).decode(text));
  } catch (e) {
    throw new CheckpointError(`${where}: cannot read checkpoint state: ${(e as Error).message}`);
  }
  return parseTrainerState(raw, where);
}

/** Tensors of a safetensors image as float32 (any stored float dtype). */
export function tensorsFromBytes(bytes: Uint8Array, where: string): { tensors: TensorData; metadata: Record<string, string> } {
  let f;
  try {
    f = parseSafetensors(bytes, where);
  } catch (e) {
    const msg = (e as Error).message;
    throw new CheckpointError(msg.includes(where) ? msg : `${where}: ${msg}`);
  }
  const tensors: TensorData = new Map();
  for (const [name, t] of f.tensors) tensors.set(name, { data: toFloat32(t.data, t.dtype), shape: t.shape });
  return { tensors, metadata: f.metadata };
}

/** A checkpoint's trainer state and model tensors (no optimizer moments). */
export interface ModelCheckpoint {
  state: TrainerState;
  model: TensorData;
}

/**
 * A checkpoint from bytes: a single-file checkpoint, or a model.safetensors image with its
 * state.json given separately (a CLI checkpoint directory's two files).
 */
export function checkpointFromBytes(model: Uint8Array, state?: string | Uint8Array, where = 'checkpoint'): ModelCheckpoint {
  if (model.length >= 1 && model[0] === 0x7b && state === undefined) {
    throw new CheckpointError(`${where}: this is a JSON file, not a checkpoint; give model.safetensors together with its state.json (or a single-file .safetensors checkpoint)`);
  }
  const { tensors, metadata } = tensorsFromBytes(model, where);
  let st: TrainerState;
  if (state !== undefined) st = parseTrainerStateText(state, `${where} state.json`);
  else if (metadata[STATE_METADATA_KEY] !== undefined) st = parseTrainerStateText(metadata[STATE_METADATA_KEY], `${where} __metadata__["${STATE_METADATA_KEY}"]`);
  else throw new CheckpointError(`${where}: a safetensors file without moe-ts trainer state (no __metadata__["${STATE_METADATA_KEY}"]); give its state.json too`);
  return { state: st, model: tensors };
}

/** The single-file checkpoint: model tensors (F32) with the trainer state in __metadata__. */
export function checkpointToBytes(state: TrainerState, model: StateDict): Uint8Array {
  const m = new Map<string, TensorEntry>();
  for (const [name, t] of model) m.set(name, { dtype: 'float32', shape: [...t.shape], data: t.data });
  return serializeSafetensors(m, { format: 'pt', producer: 'moe-ts', [STATE_METADATA_KEY]: JSON.stringify(state) });
}

/** Bytes of a File, Blob, ArrayBuffer, typed array or URL (fetched). */
export async function bytesOf(src: Blob | ArrayBuffer | ArrayBufferView | URL | string): Promise<Uint8Array> {
  if (src instanceof Uint8Array) return src;
  if (ArrayBuffer.isView(src)) return new Uint8Array(src.buffer, src.byteOffset, src.byteLength);
  if (src instanceof ArrayBuffer) return new Uint8Array(src);
  if (typeof src === 'string' || src instanceof URL) {
    const res = await fetch(src);
    if (!res.ok) throw new CheckpointError(`fetching ${String(src)} failed with HTTP ${res.status}`);
    return new Uint8Array(await res.arrayBuffer());
  }
  if (typeof (src as Blob).arrayBuffer === 'function') return new Uint8Array(await (src as Blob).arrayBuffer());
  throw new CheckpointError('checkpoint source must be a File, Blob, ArrayBuffer, typed array or URL');
}

/** Load a checkpoint from a File/Blob/ArrayBuffer/URL (and optionally its state.json from the same kinds). */
export async function loadCheckpointFrom(
  model: Blob | ArrayBuffer | ArrayBufferView | URL | string,
  state?: Blob | ArrayBuffer | ArrayBufferView | URL | string,
  where = typeof (model as unknown as { name?: unknown }).name === 'string' ? (model as unknown as { name: string }).name : 'checkpoint',
): Promise<ModelCheckpoint> {
  const [m, s] = await Promise.all([bytesOf(model), state === undefined ? undefined : bytesOf(state)]);
  return checkpointFromBytes(m, s, where);
}
