/**
 * Checkpoints: a directory per saved step holding model.safetensors (parameters and state
 * buffers, F32), optimizer.safetensors (AdamW moments) and state.json (config, tokenizer,
 * step, optimizer step, RNG and sampler states). A run directory's latest.json names the newest
 * complete checkpoint and is replaced atomically only after that checkpoint is fully on disk,
 * so a crash at any moment leaves the previous checkpoint usable.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { writeSafetensorsSync, type TensorEntry } from './safetensors.js';
import { writeJsonAtomicSync } from './atomic.js';
import type { StateDict } from '../nn/module.js';
import type { AdamWState } from '../nn/optim.js';
import { CheckpointError, checkpointFromBytes, parseTrainerStateText, tensorsFromBytes, type TrainerState } from './checkpoint-bytes.js';

export { CHECKPOINT_FORMAT, CHECKPOINT_VERSION, CheckpointError, type TrainerState } from './checkpoint-bytes.js';

export interface Checkpoint {
  dir: string;
  state: TrainerState;
  model: StateDict;
  optimizer: AdamWState | null;
}

function stepDirName(step: number): string {
  return `step-${String(step).padStart(8, '0')}`;
}

function toEntries(state: StateDict): Map<string, TensorEntry> {
  const m = new Map<string, TensorEntry>();
  for (const [name, t] of state) m.set(name, { dtype: 'float32', shape: [...t.shape], data: t.data });
  return m;
}

/** Save a checkpoint under runDir/checkpoints/step-N and point runDir/latest.json at it. */
export function saveCheckpoint(runDir: string, ck: { state: TrainerState; model: StateDict; optimizer: AdamWState }, keep = 2): string {
  const root = path.join(runDir, 'checkpoints');
  fs.mkdirSync(root, { recursive: true });
  const name = stepDirName(ck.state.step);
  const final = path.join(root, name);
  const tmp = path.join(root, `.${name}.tmp-${process.pid}`);
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp);
  writeSafetensorsSync(path.join(tmp, 'model.safetensors'), toEntries(ck.model), { format: 'pt', producer: 'moe-ts' });
  const opt = new Map<string, TensorEntry>();
  ck.optimizer.m.forEach((m, i) => opt.set(`m.${i}`, { dtype: 'float32', shape: [m.length], data: m }));
  ck.optimizer.v.forEach((v, i) => opt.set(`v.${i}`, { dtype: 'float32', shape: [v.length], data: v }));
  writeSafetensorsSync(path.join(tmp, 'optimizer.safetensors'), opt, { step: String(ck.optimizer.step) });
  writeJsonAtomicSync(path.join(tmp, 'state.json'), ck.state);
  fs.rmSync(final, { recursive: true, force: true });
  fs.renameSync(tmp, final);
  writeJsonAtomicSync(path.join(runDir, 'latest.json'), { checkpoint: path.join('checkpoints', name), step: ck.state.step });
  // prune older checkpoints, keeping the newest `keep`
  const dirs = fs.readdirSync(root).filter((d) => /^step-\d{8}$/.test(d)).sort();
  for (const d of dirs.slice(0, Math.max(0, dirs.length - keep))) fs.rmSync(path.join(root, d), { recursive: true, force: true });
  return final;
}

/** Resolve a run directory (via latest.json) or a checkpoint directory. */
export function resolveCheckpointDir(p: string): string {
  if (!fs.existsSync(p)) throw new CheckpointError(`checkpoint not found: ${p}`);
  if (fs.existsSync(path.join(p, 'state.json'))) return p;
  const latest = path.join(p, 'latest.json');
  if (!fs.existsSync(latest)) throw new CheckpointError(`${p} is neither a checkpoint (no state.json) nor a run directory (no latest.json)`);
  let rel: unknown;
  try {
    rel = (JSON.parse(fs.readFileSync(latest, 'utf8')) as { checkpoint?: unknown }).checkpoint;
  } catch (e) {
    throw new CheckpointError(`${latest}: not valid JSON: ${(e as Error).message}`);
  }
  if (typeof rel !== 'string') throw new CheckpointError(`${latest}: field checkpoint missing or not a string`);
  const dir = path.join(p, rel);
  if (!fs.existsSync(path.join(dir, 'state.json'))) throw new CheckpointError(`${latest} points to ${dir}, which has no state.json`);
  return dir;
}

function readState(dir: string): TrainerState {
  const file = path.join(dir, 'state.json');
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new CheckpointError(`${file}: cannot read checkpoint state: ${(e as Error).message}`);
  }
  return parseTrainerStateText(text, file);
}

function readTensors(file: string): Map<string, { data: Float32Array; shape: number[] }> {
  let bytes: Uint8Array;
  try {
    bytes = fs.readFileSync(file);
  } catch (e) {
    throw new CheckpointError(`safetensors ${file}: cannot read file: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  return tensorsFromBytes(bytes, file).tensors;
}

/** Load a checkpoint (run dir or checkpoint dir); `withOptimizer` false skips the moments (inference). */
export function loadCheckpoint(p: string, withOptimizer = true): Checkpoint {
  if (p.endsWith('.safetensors') && fs.existsSync(p) && fs.statSync(p).isFile()) {
    // a single-file checkpoint (e.g. downloaded from the playground): model and state, no optimizer moments
    if (withOptimizer) throw new CheckpointError(`${p}: a single-file checkpoint has no optimizer state, so training cannot resume from it`);
    const ck = checkpointFromBytes(fs.readFileSync(p), undefined, p);
    return { dir: p, state: ck.state, model: ck.model, optimizer: null };
  }
  const dir = resolveCheckpointDir(p);
  const state = readState(dir);
  const model = readTensors(path.join(dir, 'model.safetensors'));
  let optimizer: AdamWState | null = null;
  if (withOptimizer) {
    const o = readTensors(path.join(dir, 'optimizer.safetensors'));
    const n = [...o.keys()].filter((k) => k.startsWith('m.')).length;
    const m: Float32Array[] = [];
    const v: Float32Array[] = [];
    for (let i = 0; i < n; i++) {
      const mi = o.get(`m.${i}`);
      const vi = o.get(`v.${i}`);
      if (!mi || !vi) throw new CheckpointError(`${dir}/optimizer.safetensors: moment ${i} missing`);
      m.push(mi.data);
      v.push(vi.data);
    }
    optimizer = { step: state.optimizerStep, m, v };
  }
  return { dir, state, model, optimizer };
}

/** Names of the model-config fields where two configs differ (for "checkpoint from a different config"). */
export function configDiff(a: Record<string, unknown>, b: Record<string, unknown>): string[] {
  const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
  const out: string[] = [];
  for (const k of keys) {
    if (JSON.stringify(a[k]) !== JSON.stringify(b[k])) out.push(`${k} (${JSON.stringify(a[k])} vs ${JSON.stringify(b[k])})`);
  }
  return out;
}
