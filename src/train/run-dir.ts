/**
 * Run directories: what a run owns, refusing to train over an existing run unless told to
 * (`--resume` continues it, `--overwrite` replaces it), the run's own config on resume with
 * explicit overrides listed, and the metrics log (appended line by line; rewritten only
 * atomically).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { writeFileAtomicSync } from '../io/atomic.js';
import { loadCheckpoint, configDiff, CheckpointError } from '../io/checkpoint.js';
import { parseRunConfig, parseModelConfig, ConfigError, type RunConfig } from '../models/config.js';

/** Files and folders a training run writes into its directory (and --overwrite removes; nothing else is touched). */
export const RUN_FILES = ['latest.json', 'checkpoints', 'log.jsonl', 'results.json', 'config.json', 'tokenizer.json'] as const;

export class RunExistsError extends Error {}

export function existingRunFiles(dir: string): string[] {
  return RUN_FILES.filter((f) => fs.existsSync(path.join(dir, f)));
}

/**
 * Before a fresh run: refuse a directory that already holds a run, or (overwrite) remove that
 * run's files. Other files in the directory are left alone.
 */
export function prepareFreshRunDir(dir: string, overwrite: boolean): void {
  const found = existingRunFiles(dir);
  if (!found.length) return;
  if (!overwrite) {
    const latest = fs.existsSync(path.join(dir, 'latest.json')) ? ' (it has a checkpoint)' : '';
    throw new RunExistsError(`${dir} already holds a run${latest}: ${found.join(', ')}. Continue it with --resume, or replace it with --overwrite`);
  }
  for (const f of found) fs.rmSync(path.join(dir, f), { recursive: true, force: true });
}

/** Flags given explicitly on the command line when resuming (anything absent keeps the run's value). */
export interface ResumeFlags {
  /** Raw JSON of a --config file: its fields override the run's, field by field. */
  configJson?: Record<string, unknown>;
  configPath?: string;
  steps?: number;
  data?: string[];
  seed?: number;
  dense?: (m: RunConfig['model']) => RunConfig['model'];
}

function describe(v: unknown): string {
  return JSON.stringify(v) ?? 'unset';
}

/**
 * The config to resume with: the run's own (from its latest checkpoint), with each explicit flag
 * applied on top. Returns the overrides as "field: old -> new" lines for printing. Model fields
 * cannot change (the checkpoint's weights fix them): asking to is an error naming the fields.
 */
export function resumeConfig(runDir: string, flags: ResumeFlags = {}): { config: RunConfig; overrides: string[]; step: number } {
  if (!fs.existsSync(path.join(runDir, 'latest.json'))) throw new CheckpointError(`--resume: no checkpoint in ${runDir} (latest.json missing)`);
  const ck = loadCheckpoint(runDir, false);
  const saved = ck.state.config;
  const raw = flags.configJson ?? {};
  for (const k of Object.keys(raw)) if (!['model', 'training', 'data'].includes(k)) throw new ConfigError(`invalid config ${flags.configPath}: (root): unknown section "${k}"`);
  const section = (k: 'training' | 'data'): Record<string, unknown> => {
    const v = raw[k];
    if (v === undefined) return {};
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new ConfigError(`invalid config ${flags.configPath}: ${k}: expected an object`);
    return v as Record<string, unknown>;
  };
  let training: Record<string, unknown> = { ...saved.training, ...section('training') };
  let data: Record<string, unknown> = { ...saved.data, ...section('data') };
  if (flags.data) data = { ...data, sources: flags.data, weights: undefined };
  if (flags.steps !== undefined) training = { ...training, steps: flags.steps };
  if (flags.seed !== undefined) training = { ...training, seed: flags.seed };
  let model = saved.model;
  if (raw.model !== undefined) model = parseModelConfig({ ...(raw.model as object), vocab_size: saved.model.vocab_size }, `config ${flags.configPath} section model`);
  if (flags.dense) model = flags.dense(model);
  const diff = configDiff(saved.model as unknown as Record<string, unknown>, model as unknown as Record<string, unknown>);
  if (diff.length) throw new CheckpointError(`--resume: the run in ${runDir} was trained with a different model config: ${diff.join(', ')} (the model cannot change on resume)`);
  const config = parseRunConfig({ model, training, data }, flags.configPath ? `config ${flags.configPath} applied to the run` : 'resume overrides');
  const overrides: string[] = [];
  for (const k of ['training', 'data'] as const) {
    const a = saved[k] as Record<string, unknown>;
    const b = config[k] as Record<string, unknown>;
    for (const f of new Set([...Object.keys(a), ...Object.keys(b)])) {
      if (JSON.stringify(a[f]) !== JSON.stringify(b[f])) overrides.push(`${k}.${f}: ${describe(a[f])} -> ${describe(b[f])}`);
    }
  }
  return { config, overrides, step: ck.state.step };
}

/** Append one JSON line with a single write (O_APPEND), so concurrent readers never see half a record from us. */
export function appendLine(fd: number, record: unknown): void {
  fs.writeSync(fd, JSON.stringify(record) + '\n');
}

/**
 * On resume: drop log records past the resumed step (and any line a crash cut short), so the
 * log reads as one uninterrupted run. The file is replaced atomically, and only when needed.
 */
export function truncateLog(file: string, step: number): void {
  if (!fs.existsSync(file)) return;
  const text = fs.readFileSync(file, 'utf8');
  const lines = text.split('\n').filter((l) => l.trim() !== '');
  const kept = lines.filter((l) => {
    try {
      const r = JSON.parse(l) as { step?: unknown };
      return typeof r === 'object' && r !== null && typeof r.step === 'number' && r.step <= step;
    } catch {
      return false;
    }
  });
  const out = kept.map((l) => l + '\n').join('');
  if (out !== text) writeFileAtomicSync(file, out);
}
