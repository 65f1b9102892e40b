/** `moe-ts analyze`: the expert analysis of a checkpoint or model on its validation data, as an HTML page and a JSON file. */
import * as path from 'node:path';
import { loadModelForInference } from '../infer/index.js';
import { loadCorpusSplits } from '../data/corpus.js';
import { parseRunConfig } from '../models/config.js';
import { buildDataset } from '../data/build.js';
import { fromPretrainedWithTokenizer } from '../io/hf/pretrained.js';
import { analyzeExperts, type ExpertAnalysis } from '../adapt/analyze.js';
import { writeAnalysisReport } from '../bench-routers/report/analyze-report.js';

export interface AnalyzeCommandOptions {
  sources?: string[];
  batches?: number;
  hfModel?: boolean;
  prompts?: string[];
  ablation?: boolean;
  trace?: number;
  out?: string;
  dataDir?: string;
}

/** Analyse the model at `p` and write the report (default: <run>/analysis.html, or analysis.html beside a file). */
export function analyzeCommand(p: string, o: AnalyzeCommandOptions = {}): { analysis: ExpertAnalysis; html: string; json: string; dir: string } {
  const loaded = o.hfModel
    ? (() => {
        const h = fromPretrainedWithTokenizer(p);
        return { model: h.model, tokenizer: h.tokenizer, config: parseRunConfig({ model: h.config, training: { seq_len: Math.min(128, h.config.max_position_embeddings) } }), dir: p };
      })()
    : loadModelForInference(p);
  const { model, tokenizer, config, dir } = loaded;
  const sources = o.sources ?? config.data.sources;
  const cfg = parseRunConfig({ ...config, data: { ...config.data, sources, weights: undefined } });
  const data = buildDataset(
    cfg,
    tokenizer,
    sources.map((s) => loadCorpusSplits(s, { dataDir: o.dataDir })),
  );
  const analysis = analyzeExperts(model, tokenizer, data, { batches: o.batches, prompts: o.prompts, ablation: o.ablation, traceTokens: o.trace });
  const out = o.out ?? path.join(p.endsWith('.gguf') ? path.dirname(p) : p, 'analysis.html');
  const files = writeAnalysisReport(analysis, out, { title: `Expert analysis — ${path.basename(path.resolve(p))}` });
  return { analysis, ...files, dir };
}
