/** Build a run's tokenizer and dataset from its config (shared by training, evaluation and the benchmarks). */
import type { RunConfig } from '../models/config.js';
import type { CorpusText } from './corpus.js';
import { MixedDataset, tokenizeDomains } from './dataset.js';
import { ByteTokenizer, BpeTokenizer, loadTokenizerFile, type Tokenizer } from './tokenizer/index.js';

/** A source's text: a plain string (its tail is validation) or a corpus with its own validation split. */
export type SourceText = string | CorpusText;

/** The part of a source that is trained on. */
export function trainPart(t: SourceText, valFraction: number): string {
  if (typeof t !== 'string') return t.valid !== undefined ? t.train : t.train.slice(0, Math.floor(t.train.length * (1 - valFraction)));
  return t.slice(0, Math.floor(t.length * (1 - valFraction)));
}

/** Build the tokenizer a config asks for (BPE is trained on the training splits only). */
export function buildTokenizer(cfg: RunConfig, texts: SourceText[]): Tokenizer {
  const t = cfg.data.tokenizer;
  if (t.path) return loadTokenizerFile(t.path);
  return newTokenizer(cfg, texts);
}

/** The byte tokenizer, or BPE trained on the training sources (no file system involved). */
export function newTokenizer(cfg: RunConfig, texts: SourceText[]): Tokenizer {
  const t = cfg.data.tokenizer;
  if (t.type === 'byte') return new ByteTokenizer();
  const vocab = t.vocab_size ?? 1024;
  // train on the head of each source so validation text stays unseen
  const head = texts.map((s) => trainPart(s, cfg.training.val_fraction)).join('\n');
  return BpeTokenizer.train(head, { vocabSize: vocab });
}

export function buildDataset(cfg: RunConfig, tok: Tokenizer, texts: SourceText[]): MixedDataset {
  const tr = cfg.training;
  const domains = tokenizeDomains(
    tok,
    cfg.data.sources.map((name, i) => {
      const t = texts[i];
      return { name: sourceName(name), weight: cfg.data.weights?.[i], ...(typeof t === 'string' ? { text: t } : { text: t.train, valid: t.valid }) };
    }),
  );
  return new MixedDataset(domains, {
    seqLen: tr.seq_len,
    batchSize: tr.batch_size,
    valFraction: tr.val_fraction,
    seed: tr.seed,
    maxValWindows: tr.eval_batches * tr.batch_size,
  });
}

/** A short domain label: the domain name, or a file's base name without extension. */
export function sourceName(s: string): string {
  // no node:path, so dataset building also runs in browsers
  return s.includes('/') || s.endsWith('.txt') ? s.replace(/[\\/]+$/, '').split(/[\\/]/).pop()!.replace(/\.[^.]*$/, '') : s;
}
