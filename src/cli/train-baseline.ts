// The unigram baseline of a finished `moe-ts train` run (issue 10, "Honest reports"): the
// validation cross-entropy of a model that knows only the token frequencies of the run's training
// split, on the same validation windows the final evaluation scored, with the run's own tokenizer.
// A run not clearly below it (bench-routers' rule, TRAINED_MARGIN) is an undertrained smoke run.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { RunConfig } from '../models/config.js';
import type { Tokenizer } from '../data/tokenizer/index.js';
import { buildDataset } from '../data/build.js';
import { loadCorpusSplits } from '../data/corpus.js';
import { writeJsonAtomicSync } from '../io/atomic.js';
import { unigramBaseline, clearlyBelowBaseline, TRAINED_MARGIN } from '../bench-routers/metrics.js';

/** What results.json records as `unigram_baseline`. */
export interface RunBaseline {
  /** Validation cross-entropy (nats/token) under the training split's add-one smoothed token frequencies. */
  loss: number;
  domains: Record<string, number>;
  /** The run's final validation loss. */
  final_loss: number;
  /** Final loss at least `margin` (a fraction) below the baseline. */
  trained: boolean;
  margin: number;
}

export function runBaseline(cfg: RunConfig, tok: Tokenizer, finalLoss: number, dataDir?: string): RunBaseline {
  const texts = cfg.data.sources.map((s) => loadCorpusSplits(s, { dataDir }));
  const ds = buildDataset(cfg, tok, texts);
  const max = cfg.training.eval_batches;
  const val: { domain: string; targets: Int32Array }[] = [];
  for (const name of ds.domainNames) {
    let n = 0;
    for (const b of ds.valBatches(name)) {
      if (max !== undefined && n >= max) break;
      val.push({ domain: name, targets: b.targets });
      n++;
    }
  }
  const b = unigramBaseline(
    ds.domainNames.map((n) => ds.trainTokens(n)),
    val,
    tok.vocabSize,
  );
  return { loss: b.loss, domains: b.domains, final_loss: finalLoss, trained: clearlyBelowBaseline(finalLoss, b.loss), margin: TRAINED_MARGIN };
}

/** One line for the terminal. */
export function baselineLine(b: RunBaseline): string {
  const vs = `val loss ${b.final_loss.toFixed(4)} vs unigram baseline ${b.loss.toFixed(4)} nats/token (a model of token frequencies only)`;
  return b.trained
    ? `${vs}: ${(100 * (1 - b.final_loss / b.loss)).toFixed(0)}% below it\n`
    : `${vs}: not clearly below it (less than ${Math.round(b.margin * 100)}%): an undertrained smoke run, too short to compare models with; train longer (--steps)\n`;
}

/** Adds `unigram_baseline` to the run's results.json (when the run finished and wrote one). */
export function recordBaseline(outDir: string, b: RunBaseline): void {
  const p = path.join(outDir, 'results.json');
  if (!fs.existsSync(p)) return;
  const r = JSON.parse(fs.readFileSync(p, 'utf8')) as Record<string, unknown>;
  writeJsonAtomicSync(p, { ...r, unigram_baseline: b });
}
