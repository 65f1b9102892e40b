/**
 * Checkpoints: a directory per saved step holding model.safetensors (parameters and state
 * buffers, F32), optimizer.safetensors (AdamW moments) and state.json (config, tokenizer,
 * step, optimizer step, RNG and sampler states). A run directory's latest.json names the newest
 * complete checkpoint and is replaced atomically only after that checkpoint is fully on disk,
 * so a crash at any moment leaves the previous checkpoint usable.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { readSafetensorsSync, writeSafetensorsSync, type TensorEntry } from './safetensors.js';
import { fsyncDirSync, writeJsonAtomicSync } from './atomic.js';
import { readJsonFileSync, readRegularFileSync, assertRegularFile, FILE_LIMITS } from '../data/files.js';
import { toFloat32 } from '../tensor/dtype.js';
import type { StateDict } from '../nn/module.js';
import type { AdamWState } from '../nn/optim.js';
import { CheckpointError, checkpointFromBytes, parseTrainerState, type TrainerState } from './checkpoint-bytes.js';

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

/** step-00000100 or step-00000100.2 (a second save of the same step never replaces the first). */
const STEP_DIR = /^step-(\d{8,})(?:\.(\d+))?$/;
const TMP_DIR = /^\.step-\d{8,}(?:\.\d+)?\.tmp-(\d+)$/;

function parseStepDir(name: string): { step: number; seq: number } | null {
  const m = STEP_DIR.exec(name);
  return m ? { step: Number(m[1]), seq: m[2] === undefined ? 0 : Number(m[2]) } : null;
}

function toEntries(state: StateDict): Map<string, TensorEntry> {
  const m = new Map<string, TensorEntry>();
  for (const [name, t] of state) m.set(name, { dtype: 'float32', shape: [...t.shape], data: t.data });
  return m;
}

function pidAlive(pid: number): boolean {
  if (pid === process.pid) return false; // ours from an earlier failed save
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Remove half-written checkpoint directories left by a crash, a kill or a full disk (never a live process's). */
export function cleanStaleTemps(runDir: string): string[] {
  const root = path.join(runDir, 'checkpoints');
  let names: string[];
  try {
    names = fs.readdirSync(root);
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const n of names) {
    const m = TMP_DIR.exec(n);
    if (!m || pidAlive(Number(m[1]))) continue;
    try {
      fs.rmSync(path.join(root, n), { recursive: true, force: true });
      removed.push(n);
    } catch {
      // best effort: a leftover is ignored by every reader anyway
    }
  }
  return removed;
}

/** The checkpoint directories of a run, oldest first (by step, then by save of the same step). */
export function listCheckpoints(runDir: string): { name: string; step: number; seq: number }[] {
  let names: string[];
  try {
    names = fs.readdirSync(path.join(runDir, 'checkpoints'));
  } catch {
    return [];
  }
  return names
    .map((name) => ({ name, ...parseStepDir(name)! }))
    .filter((d) => STEP_DIR.test(d.name))
    .sort((a, b) => a.step - b.step || a.seq - b.seq);
}

/**
 * Save a checkpoint under runDir/checkpoints/step-N and point runDir/latest.json at it.
 * Order: write everything into a temp directory, rename it into place (under a fresh name if
 * step-N already exists, so the checkpoint latest.json names is never removed or replaced), then
 * replace latest.json atomically, then prune. A crash or a full disk at any point leaves
 * latest.json naming a complete checkpoint. Pruning keeps the newest `keep` checkpoints up to
 * the new one and never touches anything newer.
 */
export function saveCheckpoint(runDir: string, ck: { state: TrainerState; model: StateDict; optimizer: AdamWState }, keep = 2): string {
  const root = path.join(runDir, 'checkpoints');
  const base = stepDirName(ck.state.step);
  let tmp: string | undefined;
  try {
    fs.mkdirSync(root, { recursive: true });
    cleanStaleTemps(runDir);
    let name = base;
    for (let seq = 1; fs.existsSync(path.join(root, name)); seq++) name = `${base}.${seq}`;
    const final = path.join(root, name);
    tmp = path.join(root, `.${name}.tmp-${process.pid}`);
    fs.rmSync(tmp, { recursive: true, force: true });
    fs.mkdirSync(tmp);
    writeSafetensorsSync(path.join(tmp, 'model.safetensors'), toEntries(ck.model), { format: 'pt', producer: 'moe-ts' });
    const opt = new Map<string, TensorEntry>();
    ck.optimizer.m.forEach((m, i) => opt.set(`m.${i}`, { dtype: 'float32', shape: [m.length], data: m }));
    ck.optimizer.v.forEach((v, i) => opt.set(`v.${i}`, { dtype: 'float32', shape: [v.length], data: v }));
    writeSafetensorsSync(path.join(tmp, 'optimizer.safetensors'), opt, { step: String(ck.optimizer.step) });
    writeJsonAtomicSync(path.join(tmp, 'state.json'), ck.state);
    fs.renameSync(tmp, final);
    tmp = undefined;
    fsyncDirSync(root);
    writeJsonAtomicSync(path.join(runDir, 'latest.json'), { checkpoint: path.join('checkpoints', name), step: ck.state.step });
    prune(runDir, name, keep);
    return final;
  } catch (e) {
    if (tmp !== undefined) {
      try {
        fs.rmSync(tmp, { recursive: true, force: true });
      } catch {
        /* a later save or resume cleans it up */
      }
    }
    const msg = (e as NodeJS.ErrnoException).code === 'ENOSPC' ? 'no space left on device' : (e as Error).message;
    throw new CheckpointError(`cannot save checkpoint of step ${ck.state.step} in ${root}: ${msg}; latest.json still names the previous complete checkpoint`);
  }
}

function prune(runDir: string, current: string, keep: number): void {
  const all = listCheckpoints(runDir);
  const at = all.findIndex((d) => d.name === current);
  if (at < 0) return;
  // only checkpoints older than the one latest.json now names; keep the newest keep-1 of them
  const older = all.slice(0, at);
  for (const d of older.slice(0, Math.max(0, older.length - (keep - 1)))) {
    try {
      fs.rmSync(path.join(runDir, 'checkpoints', d.name), { recursive: true, force: true });
    } catch {
      // pruning is housekeeping: the next save retries
    }
  }
}

/** Read and check latest.json; returns the checkpoint path relative to the run directory. */
function readLatest(runDir: string): string {
  const latest = path.join(runDir, 'latest.json');
  let v: unknown;
  try {
    v = readJsonFileSync(latest, { what: 'checkpoint pointer', maxBytes: FILE_LIMITS.pointer, object: true });
  } catch (e) {
    throw new CheckpointError((e as Error).message);
  }
  const rel = (v as { checkpoint?: unknown }).checkpoint;
  if (typeof rel !== 'string' || rel === '') throw new CheckpointError(`${latest}: field checkpoint missing or not a string (got ${JSON.stringify(rel) ?? 'nothing'})`);
  if (path.isAbsolute(rel) || rel.split(/[\\/]/).includes('..')) throw new CheckpointError(`${latest}: field checkpoint must be a path inside the run directory, got ${JSON.stringify(rel)}`);
  return rel;
}

/** Resolve a run directory (via latest.json) or a checkpoint directory. */
export function resolveCheckpointDir(p: string): string {
  if (!fs.existsSync(p)) throw new CheckpointError(`checkpoint not found: ${p}`);
  if (fs.existsSync(path.join(p, 'state.json'))) return p;
  const latest = path.join(p, 'latest.json');
  if (!fs.existsSync(latest)) throw new CheckpointError(`${p} is neither a checkpoint (no state.json) nor a run directory (no latest.json)`);
  const dir = path.join(p, readLatest(p));
  if (!fs.existsSync(path.join(dir, 'state.json'))) {
    const complete = listCheckpoints(p).filter((d) => fs.existsSync(path.join(p, 'checkpoints', d.name, 'state.json')));
    const hint = complete.length ? `; the newest complete checkpoint is ${path.join(p, 'checkpoints', complete[complete.length - 1].name)}` : '';
    throw new CheckpointError(`${latest} points to ${dir}, which has no state.json${hint}`);
  }
  return dir;
}

function readState(dir: string): TrainerState {
  const file = path.join(dir, 'state.json');
  let v: unknown;
  try {
    v = readJsonFileSync(file, { what: 'checkpoint state', maxBytes: FILE_LIMITS.checkpointJson, object: true });
  } catch (e) {
    throw new CheckpointError((e as Error).message);
  }
  return parseTrainerState(v, file);
}

/** Options of loadCheckpoint. */
export interface LoadCheckpointOptions {
  /** Load tensors holding NaN or infinity instead of refusing them (for debugging a diverged run). */
  allowNonFinite?: boolean;
}

/** Index of the first NaN/inf in `a`, or -1. */
export function firstNonFinite(a: Float32Array): number {
  for (let i = 0; i < a.length; i++) if (!Number.isFinite(a[i])) return i;
  return -1;
}

function readTensors(file: string, opts: LoadCheckpointOptions): Map<string, { data: Float32Array; shape: number[] }> {
  let f;
  try {
    assertRegularFile(file, 'checkpoint file');
    f = readSafetensorsSync(file);
  } catch (e) {
    throw new CheckpointError(`safetensors ${file}: cannot read file: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  const out = new Map<string, { data: Float32Array; shape: number[] }>();
  for (const [name, t] of f.tensors) {
    const data = toFloat32(t.data, t.dtype);
    if (!opts.allowNonFinite) {
      const i = firstNonFinite(data);
      if (i >= 0) {
        let n = 0;
        for (let j = i; j < data.length; j++) if (!Number.isFinite(data[j])) n++;
        throw new CheckpointError(
          `${file}: tensor "${name}" holds ${n} non-finite value${n === 1 ? '' : 's'} (first: ${data[i]} at index ${i}); the run diverged before this save. Load it anyway with --allow-non-finite (allowNonFinite) to debug`,
        );
      }
    }
    out.set(name, { data, shape: t.shape });
  }
  return out;
}

/** Load a checkpoint (run dir or checkpoint dir); `withOptimizer` false skips the moments (inference). */
export function loadCheckpoint(p: string, withOptimizer = true, opts: LoadCheckpointOptions = {}): Checkpoint {
  if (p.endsWith('.safetensors') && fs.existsSync(p) && fs.statSync(p).isFile()) {
    // a single-file checkpoint (e.g. downloaded from the playground): model and state, no optimizer moments
    if (withOptimizer) throw new CheckpointError(`${p}: a single-file checkpoint has no optimizer state, so training cannot resume from it`);
    const ck = checkpointFromBytes(readRegularFileSync(p, { what: 'checkpoint file', maxBytes: FILE_LIMITS.checkpointJson }), undefined, p);
    return { dir: p, state: ck.state, model: ck.model, optimizer: null };
  }
  const dir = resolveCheckpointDir(p);
  const state = readState(dir);
  const model = readTensors(path.join(dir, 'model.safetensors'), opts);
  let optimizer: AdamWState | null = null;
  if (withOptimizer) {
    const o = readTensors(path.join(dir, 'optimizer.safetensors'), opts);
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
