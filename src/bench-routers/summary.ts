/**
 * From the benchmark's run records to the comparison the report shows: ranking by final
 * validation loss, compute saving against the dense baseline, specialisation per layer, balance
 * over training, and an auto-written recommendation derived only from those numbers.
 */
import { computeSaving, lateMean, specialisation } from './metrics.js';
import { isBatchDependent, isSoftRouting } from './traits.js';
import { isTied, seedStats, TIE_MARGIN } from './seeds.js';
import type { BenchAnalysis, RouterAnalysis, RunRecord } from './types.js';

export { TIE_MARGIN };

const fmt = (x: number, d = 3): string => x.toFixed(d);
const pct = (x: number): string => `${(100 * x).toFixed(x < 0.1 ? 1 : 0)}%`;

export function analyseRuns(runs: readonly RunRecord[], opts: { topK: number }): BenchAnalysis {
  const dense = runs.find((r) => r.kind === 'dense' && r.status === 'done' && r.final);
  const denseFinalLoss = dense?.final?.loss ?? null;
  const denseTokens = dense ? dense.tokens : null;
  const done = runs.filter((r) => r.status === 'done' && r.final);
  const order = [...done].sort((a, b) => a.final!.loss - b.final!.loss).map((r) => r.name);
  const routers: RouterAnalysis[] = runs.map((r) => {
    const ok = r.status === 'done' && r.final !== null;
    const spec = ok && r.kind === 'moe' ? r.final!.expertUsage.map((layer) => specialisation(layer)) : [];
    const saving =
      ok && r.kind === 'moe' && dense && denseFinalLoss !== null
        ? computeSaving(
            r.curve.map((c) => ({ tokens: c.tokens, loss: c.loss })),
            { finalLoss: denseFinalLoss, tokens: dense.tokens },
          )
        : null;
    const moe = ok && r.kind === 'moe';
    const seedLosses = ok ? (r.perSeed ? r.perSeed.map((x) => x.finalLoss).filter((x): x is number => x !== null) : [r.final!.loss]) : [];
    const st = seedLosses.length > 1 ? seedStats(seedLosses) : null;
    return {
      name: r.name,
      kind: r.kind,
      status: r.status,
      rank: ok ? order.indexOf(r.name) + 1 : null,
      finalLoss: ok ? r.final!.loss : null,
      seeds: seedLosses.length,
      lossStd: st ? st.std : null,
      lossStderr: st ? st.stderr : null,
      seedLosses,
      deltaVsDense: ok && denseFinalLoss !== null ? r.final!.loss - denseFinalLoss : null,
      saving,
      specialisation: spec,
      meanSpecialisation: spec.length ? spec.reduce((s, x) => s + x.normalized, 0) / spec.length : null,
      lateLoadCV: moe ? lateMean(r.intervals, 'loadCV') : null,
      lateDroppedFraction: moe ? lateMean(r.intervals, 'droppedFraction') : null,
      meanRouterEntropy: moe ? mean(r.intervals.map((i) => i.routerEntropy)) : null,
      meanExpertsPerToken: moe ? mean(r.intervals.map((i) => i.expertsPerToken)) : null,
      tokensPerSec: r.tokensPerSec,
      batchDependent: r.kind === 'moe' && isBatchDependent(r.model.router_type),
    };
  });
  const seeds = Math.max(1, ...routers.map((r) => r.seeds));
  const analysis: BenchAnalysis = { reference: dense?.name ?? null, denseFinalLoss, denseTokens, routers, seeds, recommendation: [] };
  analysis.recommendation = recommend(analysis, runs, opts.topK);
  return analysis;
}

function mean(xs: number[]): number {
  return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : 0;
}

/** Sentences (with **bold** markers) saying which router to use on this data and why. */
export function recommend(a: BenchAnalysis, runs: readonly RunRecord[], topK: number): string[] {
  const moe = a.routers.filter((r) => r.kind === 'moe' && r.status === 'done' && r.finalLoss !== null);
  const out: string[] = [];
  if (!moe.length) return ['No MoE run finished, so there is nothing to recommend yet.'];
  const byLoss = [...moe].sort((x, y) => x.finalLoss! - y.finalLoss!);
  const best = byLoss[0];
  const d = a.denseFinalLoss;

  // routers that ran more experts per token than k bought their loss with extra compute
  const moreCompute = (r: RouterAnalysis): boolean => r.meanExpertsPerToken !== null && !isSoft(runs, r.name) && r.meanExpertsPerToken > topK * 1.1;

  // 1. quality
  const multi = a.seeds > 1;
  const pm = (r: RouterAnalysis): string => (r.lossStd !== null ? ` ± ${fmt(r.lossStd)}` : '');
  let s = multi ? `Lowest mean validation loss over ${a.seeds} seeds: **${best.name}** (${fmt(best.finalLoss!)}${pm(best)} std` : `Lowest validation loss: **${best.name}** (${fmt(best.finalLoss!)}`;
  if (d !== null) {
    const delta = best.finalLoss! - d;
    s += delta < 0 ? `, ${fmt(-delta)} below the FLOP-matched dense baseline's ${fmt(d)}` : `, ${fmt(delta)} above the FLOP-matched dense baseline's ${fmt(d)}`;
    if (best.saving?.ratio != null) s += `; it reached the dense model's final loss after ${pct(best.saving.ratio)} of the dense token budget`;
  }
  if (moreCompute(best)) s += `, but with ${fmt(best.meanExpertsPerToken!, 2)} experts per token, ${fmt(best.meanExpertsPerToken! / topK, 1)}× the expert compute of top-${topK}`;
  out.push(s + ').');
  const tied = byLoss.slice(1).filter((r) => isTied(r, best));
  if (tied.length && multi) {
    out.push(
      `${list(tied.map((r) => `**${r.name}**`))} ${tied.length === 1 ? 'overlaps' : 'overlap'} with it: the ~95% intervals (mean ± 2·stderr over the seeds) are not separated, so treat ${tied.length === 1 ? 'the two' : 'them'} as tied.`,
    );
  } else if (tied.length) {
    out.push(
      `${list(tied.map((r) => `**${r.name}**`))} ${tied.length === 1 ? 'is' : 'are'} within ${TIE_MARGIN} of it, which is inside single-seed noise at this scale: treat ${tied.length === 1 ? 'the two' : 'them'} as tied.`,
    );
  } else if (multi && byLoss.length > 1) {
    out.push(`Its ~95% interval (mean ± 2·stderr over the seeds) is separated from every other router's, so the ranking at the top is not seed noise.`);
  }
  if (d !== null) {
    const beat = moe.filter((r) => r.finalLoss! < d);
    if (!beat.length) {
      out.push(`No router beat the dense baseline within this budget; MoE gains usually need more training tokens than a short CPU run gives, so rerun with more --steps before drawing conclusions.`);
    } else if (beat.length < moe.length) {
      out.push(`${beat.length} of ${moe.length} routers beat the dense baseline; ${list(moe.filter((r) => r.finalLoss! >= d).map((r) => r.name))} did not.`);
    } else {
      out.push(`Every router beat the dense baseline.`);
    }
  }

  // 2. balance and drops
  const balanced = [...moe].sort((x, y) => x.lateLoadCV! - y.lateLoadCV!);
  out.push(`Most even expert load: **${balanced[0].name}** (load CV ${fmt(balanced[0].lateLoadCV!, 2)} over the second half of training)${balanced.length > 1 ? `; least even: ${balanced[balanced.length - 1].name} (CV ${fmt(balanced[balanced.length - 1].lateLoadCV!, 2)})` : ''}.`);
  const droppers = moe.filter((r) => r.lateDroppedFraction! > 0.01);
  if (droppers.length) {
    out.push(`${list(droppers.map((r) => `${r.name} (${pct(r.lateDroppedFraction!)})`))} dropped token assignments to expert capacity late in training; dropped tokens skip the FFN, which costs quality on skewed data.`);
  }

  // 3. speed
  const fastest = [...moe].sort((x, y) => y.tokensPerSec - x.tokensPerSec)[0];
  const denseRun = a.routers.find((r) => r.kind === 'dense');
  out.push(
    `Fastest: **${fastest.name}** (${Math.round(fastest.tokensPerSec)} tokens/s${denseRun ? ` vs ${Math.round(denseRun.tokensPerSec)} for dense` : ''}); throughput was measured one run after another on a shared CPU, so differences under about 15% are not meaningful.`,
  );

  // 4. compute matching and decoding caveats
  const offK = moe.filter((r) => r.meanExpertsPerToken !== null && Math.abs(r.meanExpertsPerToken - topK) / topK > 0.1 && !isSoft(runs, r.name));
  if (offK.length) {
    out.push(
      `Active compute is not matched for ${list(offK.map((r) => `${r.name} (${fmt(r.meanExpertsPerToken!, 2)} experts/token)`))}: ${offK.length === 1 ? 'it does' : 'they do'} not run k = ${topK} experts per token (fixed top-1, or a dynamic number per token), so weigh ${offK.length === 1 ? 'its loss' : 'their losses'} against that compute.`,
    );
  }
  const batchDep = moe.filter((r) => r.batchDependent);
  if (batchDep.length) {
    out.push(
      `${list(batchDep.map((r) => r.name))} route${batchDep.length === 1 ? 's' : ''} each token using the other tokens of the batch, so ${batchDep.length === 1 ? 'it' : 'they'} cannot be used for incremental (KV-cached) decoding as trained: generation would not match the training-time routing. Fine for encoders and batch scoring, not for autoregressive generation.`,
    );
  }

  // 5. the recommendation
  const excluded = (r: RouterAnalysis): string | null =>
    r.batchDependent ? 'depends on the batch' : r.lateDroppedFraction! > 0.05 ? 'drops many tokens' : moreCompute(r) ? `uses ${fmt(r.meanExpertsPerToken!, 2)} experts per token` : null;
  const usable = byLoss.filter((r) => excluded(r) === null);
  const pick = usable[0] ?? best;
  let rec = `**Recommendation:** on this data, use **${pick.name}**`;
  const why: string[] = [];
  if (pick === best) why.push(multi ? 'it had the lowest mean validation loss' : 'it had the lowest validation loss');
  else {
    const better = byLoss.slice(0, byLoss.indexOf(pick));
    why.push(`it had the lowest validation loss among routers that are usable for generation at matched compute (${list(better.map((r) => `${r.name} ${excluded(r)}`))})`);
  }
  if (pick === balanced[0]) why.push('the most even expert load');
  else if (pick.lateLoadCV! < 0.3) why.push('a well balanced load');
  if (pick.saving?.ratio != null && pick.saving.ratio < 1) why.push(`${pct(1 - pick.saving.ratio)} less training compute than dense for the same loss`);
  rec += `: ${list(why)}.`;
  const alsoTied = usable.filter((r) => r !== pick && r.finalLoss! >= pick.finalLoss! && isTied(r, pick));
  if (alsoTied.length) {
    const faster = alsoTied.filter((r) => r.tokensPerSec > pick.tokensPerSec * 1.15);
    rec += multi
      ? ` ${list(alsoTied.map((r) => r.name))} ${alsoTied.length === 1 ? 'is' : 'are'} statistically tied with it (overlapping ~95% intervals over ${a.seeds} seeds)${faster.length ? `, and ${list(faster.map((r) => r.name))} ran faster here` : ''}; the loss alone does not separate them, so choose on speed or balance.`
      : ` ${list(alsoTied.map((r) => r.name))} ${alsoTied.length === 1 ? 'is' : 'are'} statistically tied${faster.length ? `, and ${list(faster.map((r) => r.name))} ran faster here` : ''}; confirm with a second seed before committing to one.`;
  } else if (multi) {
    rec += ` Over ${a.seeds} seeds its mean loss is ${fmt(pick.finalLoss!)}${pm(pick)} (std), and no other usable router's ~95% interval overlaps it.`;
  }
  out.push(rec);
  return out;
}

function isSoft(runs: readonly RunRecord[], name: string): boolean {
  return isSoftRouting(runs.find((x) => x.name === name)?.model.router_type);
}

function list(xs: string[]): string {
  if (xs.length <= 1) return xs.join('');
  return `${xs.slice(0, -1).join(', ')} and ${xs[xs.length - 1]}`;
}
