/**
 * Hugging Face tokenizer files in a model directory: tokenizer.json, tokenizer_config.json, and the
 * optional chat_template.jinja (recent transformers save the template there) and
 * generation_config.json (its eos_token_id also ends a turn).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { HfTokenizer } from '../data/tokenizer/hf.js';
import type { Tokenizer } from '../data/tokenizer/types.js';
import { writeFileAtomicSync, writeJsonAtomicSync } from './atomic.js';
import { oneLine, checkJsonDepth } from '../tensor/validate.js';

/** Upper bounds per file (a 256k-token vocabulary's tokenizer.json is ~20 MB). */
const MAX_TOKENIZER_JSON = 256 * 1024 * 1024;
const MAX_SMALL_FILE = 16 * 1024 * 1024;

/** the files saveHfTokenizerFiles writes */
export const HF_TOKENIZER_FILES = ['tokenizer.json', 'tokenizer_config.json'] as const;

/** Read a regular file of at most `max` bytes as UTF-8; undefined when it does not exist and `optional`. */
function readBounded(file: string, max: number, optional: boolean): string | undefined {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (optional && code === 'ENOENT') return undefined;
    throw new Error(`${file}: cannot read: ${code ?? (e as Error).message}`);
  }
  if (!st.isFile()) throw new Error(`${file}: not a regular file`);
  if (st.size > max) throw new Error(`${file}: ${st.size} bytes, more than the ${max} accepted for this file`);
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new Error(`${file}: cannot read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}

function parseObject(file: string, text: string): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new Error(`${file}: not valid JSON: ${oneLine((e as Error).message)}`);
  }
  checkJsonDepth(v, file);
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error(`${file}: expected a JSON object`);
  return v as Record<string, unknown>;
}

/** eos_token_id of generation_config.json: an id or a list of ids. */
function generationStopIds(file: string, cfg: Record<string, unknown>): number[] {
  const v = cfg.eos_token_id;
  if (v === undefined || v === null) return [];
  const list = Array.isArray(v) ? v : [v];
  for (const id of list) {
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 0) throw new Error(`${file}: field eos_token_id must be an id or a list of ids, got ${JSON.stringify(v)}`);
  }
  return list as number[];
}

/**
 * Load the tokenizer of a Hugging Face model directory. tokenizer.json is required;
 * tokenizer_config.json, chat_template.jinja and generation_config.json are optional. Every
 * error is one line naming the file.
 */
export function loadHfTokenizerFiles(dir: string): HfTokenizer {
  const tFile = path.join(dir, 'tokenizer.json');
  const cFile = path.join(dir, 'tokenizer_config.json');
  const tText = readBounded(tFile, MAX_TOKENIZER_JSON, true);
  if (tText === undefined) throw new Error(`${tFile}: not found (a Hugging Face tokenizer needs tokenizer.json; the slow sentencepiece/vocab.json forms are not read)`);
  const tokenizer = parseObject(tFile, tText);
  const cText = readBounded(cFile, MAX_SMALL_FILE, true);
  const config = cText === undefined ? {} : parseObject(cFile, cText);
  if (config.chat_template === undefined) {
    const jFile = path.join(dir, 'chat_template.jinja');
    const tpl = readBounded(jFile, MAX_SMALL_FILE, true);
    if (tpl !== undefined) config.chat_template = tpl;
  }
  const gFile = path.join(dir, 'generation_config.json');
  const gText = readBounded(gFile, MAX_SMALL_FILE, true);
  const extraStopIds = gText === undefined ? [] : generationStopIds(gFile, parseObject(gFile, gText));
  try {
    return new HfTokenizer({ tokenizer, config }, { tokenizerSource: tFile, configSource: cFile, extraStopIds });
  } catch (e) {
    const msg = oneLine((e as Error).message, 1000);
    throw new Error(msg.includes(dir) ? msg : `${dir}: ${msg}`);
  }
}

/**
 * Write tokenizer.json and tokenizer_config.json for `tok` into `dir` (atomically, creating it):
 * a Hugging Face tokenizer as loaded, a moe-ts byte or BPE tokenizer in its exported form. Refuses
 * to replace existing files unless `overwrite`.
 */
export function saveHfTokenizerFiles(tok: Tokenizer, dir: string, opts: { overwrite?: boolean } = {}): void {
  if (!tok.toHuggingFace) throw new Error(`tokenizer ${tok.name} has no tokenizer.json form`);
  const files = tok.toHuggingFace();
  if (!opts.overwrite) {
    for (const f of HF_TOKENIZER_FILES) {
      const p = path.join(dir, f);
      if (fs.existsSync(p)) throw new Error(`${p} already exists (pass overwrite to replace it)`);
    }
  }
  fs.mkdirSync(dir, { recursive: true });
  // compact: a large vocabulary pretty-printed is several times bigger
  writeFileAtomicSync(path.join(dir, 'tokenizer.json'), JSON.stringify(files.tokenizer));
  writeJsonAtomicSync(path.join(dir, 'tokenizer_config.json'), files.config);
}
