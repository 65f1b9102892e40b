/** `moe-ts eval`: per-domain validation loss of a checkpoint plus routing statistics. */
import { loadModelForInference } from '../infer/index.js';
import { loadCorpusSplits } from '../data/corpus.js';
import { parseRunConfig } from '../models/config.js';
import { buildDataset } from '../data/build.js';
import { evaluate, type EvalResult } from '../train/evaluate.js';
import { fromPretrainedWithTokenizer } from '../io/hf/pretrained.js';

function loadHf(dir: string) {
  const p = fromPretrainedWithTokenizer(dir);
  return { model: p.model, tokenizer: p.tokenizer, config: parseRunConfig({ model: p.config, training: { seq_len: Math.min(128, p.config.max_position_embeddings) } }), dir, step: 0 };
}
import { noGrad } from '../tensor/tensor.js';
import { Rng } from '../tensor/random.js';
import { traceLayers } from '../moe/trace.js';
import type { LanguageModel } from '../models/family.js';
import type { MoETransformerLM } from '../models/transformer.js';
import type { MixedDataset } from '../data/dataset.js';
import type { Tokenizer } from '../data/tokenizer/index.js';
import type { TokenRouting } from '../infer/generate.js';
import { withExpertOverrides } from '../infer/steer.js';
import type { LayerExpertOverride } from '../moe/override.js';
import { buildRerouteReference, referenceWindows, withReroute } from '../adapt/reroute.js';

export interface EvalReport extends EvalResult {
  checkpoint: string;
  step: number;
  sources: string[];
  /** With opts.trace: the routing of the first tokens of each domain's first validation window. */
  trace?: { domain: string; tokens: TokenRouting[] }[];
  /** The force/forbid overrides the evaluation ran under (absent: none). */
  experts?: LayerExpertOverride[];
  /** With opts.reroute: the same evaluation with R2-T2-style kNN re-routing toward the reference text's routing. */
  reroute?: { reference: string; tokens: number; k: number; lambda: number; loss: number; domains: { domain: string; loss: number; before: number }[] };
}

/** Routing of the first `n` tokens of each domain's first validation window, one forward per domain. */
export function traceRouting(model: LanguageModel, tokenizer: Tokenizer, data: MixedDataset, n: number): { domain: string; tokens: TokenRouting[] }[] {
  return noGrad(() =>
    data.domainNames.map((domain) => {
      const first = data.valBatches(domain, 1).next().value;
      if (!first) return { domain, tokens: [] };
      const T = Math.min(n, first.seqLen);
      const ids = first.inputs.slice(0, T);
      const { aux } = model.forward(ids, 1, T, { ctx: { training: false, step: 0, rng: new Rng(0) } });
      // a depth-routed layer's records cover only its chosen tokens: traced are the full layers
      const per = traceLayers(
        aux.filter((a) => (model.depthCaps?.[a.layer] ?? 1) >= 1),
        T,
      );
      return {
        domain,
        tokens: Array.from(ids, (id: number, t: number): TokenRouting => ({
          id,
          text: tokenizer.decode(ids.subarray(t, t + 1)),
          prompt: false,
          layers: per.map(({ experts, ...p }) => ({ ...p, ...experts[t] })),
        })),
      };
    }),
  );
}

/** Evaluate a moe-ts checkpoint, or (hfModel) a Hugging Face model directory with default training settings. */
export function evalCheckpoint(
  ckpt: string,
  opts: {
    sources?: string[];
    batches?: number;
    dataDir?: string;
    hfModel?: boolean;
    allowNonFinite?: boolean;
    trace?: number;
    experts?: LayerExpertOverride[];
    reroute?: string;
    rerouteK?: number;
    rerouteLambda?: number;
  } = {},
): EvalReport {
  const { model, tokenizer, config, dir, step } = opts.hfModel ? loadHf(ckpt) : loadModelForInference(ckpt, { allowNonFinite: opts.allowNonFinite });
  const sources = opts.sources ?? config.data.sources;
  const batches = opts.batches ?? config.training.eval_batches;
  const cfg = parseRunConfig({
    ...config,
    data: { ...config.data, sources, weights: undefined },
    training: { ...config.training, eval_batches: batches },
  });
  const texts = sources.map((s) => loadCorpusSplits(s, { dataDir: opts.dataDir }));
  const data = buildDataset(cfg, tokenizer, texts);
  const experts = opts.experts ?? [];
  // steering reads layers[i].block_sparse_moe, which every family's layers have
  const steered = model as MoETransformerLM;
  const { r, trace } = withExpertOverrides(steered, experts, () => ({
    r: evaluate(model, data, { maxBatches: batches, step }),
    trace: opts.trace ? traceRouting(model, tokenizer, data, opts.trace) : undefined,
  }));
  let reroute: EvalReport['reroute'];
  if (opts.reroute) {
    const ref = loadCorpusSplits(opts.reroute, { dataDir: opts.dataDir });
    const refs = buildRerouteReference(steered, referenceWindows(tokenizer, ref.train, cfg.training.seq_len));
    const k = opts.rerouteK ?? 8;
    const lambda = opts.rerouteLambda ?? 0.5;
    const after = withReroute(steered, refs, { k, lambda }, () => evaluate(model, data, { maxBatches: batches, step }));
    reroute = {
      reference: opts.reroute,
      tokens: [...refs.values()][0].n,
      k,
      lambda,
      loss: after.loss,
      domains: after.domains.map((d, i) => ({ domain: d.domain, loss: d.loss, before: r.domains[i].loss })),
    };
  }
  return { ...r, checkpoint: dir, step, sources, ...(trace ? { trace } : {}), ...(experts.length ? { experts } : {}), ...(reroute ? { reroute } : {}) };
}

export function formatEval(r: EvalReport): string {
  const steer = (r.experts ?? []).map((o) => [...(o.force ?? []).map((e) => `force ${o.layer}:${e}`), ...(o.forbid ?? []).map((e) => `forbid ${o.layer}:${e}`)].join(', ')).join(', ');
  const lines = [`checkpoint ${r.checkpoint} (step ${r.step})${steer ? ` with ${steer}` : ''}`, '', 'domain            loss     ppl      tokens'];
  for (const d of r.domains) lines.push(`${d.domain.padEnd(16)} ${d.loss.toFixed(4).padStart(7)} ${d.perplexity.toFixed(2).padStart(8)} ${String(d.tokens).padStart(10)}`);
  lines.push(`${'all'.padEnd(16)} ${r.loss.toFixed(4).padStart(7)} ${r.perplexity.toFixed(2).padStart(8)}`);
  if (r.reroute) {
    const rr = r.reroute;
    lines.push('', `re-routed toward ${rr.reference} (${rr.tokens} correctly predicted reference tokens, k ${rr.k}, lambda ${rr.lambda}):`, 'domain            before   after    change');
    for (const d of rr.domains)
      lines.push(`${d.domain.padEnd(16)} ${d.before.toFixed(4).padStart(7)} ${d.loss.toFixed(4).padStart(7)} ${((d.loss - d.before >= 0 ? '+' : '') + (d.loss - d.before).toFixed(4)).padStart(9)}`);
    lines.push(`${'all'.padEnd(16)} ${r.loss.toFixed(4).padStart(7)} ${rr.loss.toFixed(4).padStart(7)} ${((rr.loss - r.loss >= 0 ? '+' : '') + (rr.loss - r.loss).toFixed(4)).padStart(9)}`);
  }
  if (r.moeLayers.length) {
    const rt = r.routing;
    lines.push(
      '',
      `routing: load cv ${rt.loadCV.toFixed(3)}, dropped ${(rt.droppedFraction * 100).toFixed(2)}%, router entropy ${rt.routerEntropy.toFixed(3)} nats, experts/token ${rt.expertsPerToken.toFixed(2)}`,
    );
    r.moeLayers.forEach((layer, li) => {
      lines.push(`layer ${layer} tokens per expert:`);
      r.domains.forEach((d, di) => lines.push(`  ${d.domain.padEnd(14)} ${r.expertUsage[li][di].map((v) => String(Math.round(v)).padStart(6)).join(' ')}`));
    });
  }
  return lines.join('\n') + '\n';
}
