/**
 * From the benchmark's run records to the comparison the report shows: ranking by final
 * validation loss (compute-matched routers apart from those that used more active compute),
 * comparisons by one rule (Welch's 95% interval of the difference of seed means) between routers
 * and against the dense baseline, the unigram baseline that decides whether a run learnt anything,
 * and an auto-written recommendation derived only from those numbers.
 */
import { clearlyBelowBaseline, computeSaving, lateMean, specialisation, TRAINED_MARGIN, type UnigramBaseline } from './metrics.js';
import { isBatchDependent } from './traits.js';
import { compareLoss, seedNoise, seedStats } from './seeds.js';
import { COVERAGE } from './stats.js';
import type { BenchAnalysis, ComputeClass, RouterAnalysis, RunRecord } from './types.js';

const fmt = (x: number, d = 3): string => x.toFixed(d);
const pct = (x: number): string => `${(100 * x).toFixed(x < 0.1 ? 1 : 0)}%`;
const cov = `${Math.round(COVERAGE * 100)}%`;

/**
 * Tolerance of the compute classification: a router whose measured FFN compute relative to the
 * dense baseline ((experts/token + shared) / (k + shared)) lies in [1 - tol, 1 + tol] (inclusive)
 * is compute-matched; above it is listed apart ('more'), below it is ranked at a disadvantage ('less').
 */
export const COMPUTE_TOLERANCE = 0.1;

/** Shared experts of a model config in units of one routed expert's width (0 without shared experts). */
export function sharedExpertUnits(m: Record<string, unknown>): number {
  const n = typeof m.n_shared_experts === 'number' ? m.n_shared_experts : 0;
  const w = typeof m.moe_intermediate_size === 'number' && m.moe_intermediate_size > 0 ? m.moe_intermediate_size : 1;
  const sw = typeof m.shared_expert_intermediate_size === 'number' ? m.shared_expert_intermediate_size : w;
  return (n * sw) / w;
}

/**
 * FFN compute of an MoE relative to its FLOP-matched dense baseline, whose FFN is as wide as k
 * routed experts plus the shared ones: (experts/token + shared) / (k + shared). Experts per token
 * is the measured count of expert evaluations (soft routing: slot evaluations E·S/T per token).
 */
export function computeVsDense(expertsPerToken: number, topK: number, shared = 0): number {
  if (!(topK + shared > 0)) throw new Error(`computeVsDense: topK + shared experts must be > 0, got ${topK} + ${shared}`);
  return (expertsPerToken + shared) / (topK + shared);
}

/**
 * Compute class from the measured ratio alone (the router's declared traits play no part):
 * within COMPUTE_TOLERANCE of 1 inclusive is 'matched'; a ratio that is not a finite number is 'unmeasured'.
 */
export function classifyCompute(ratio: number | null, tolerance = COMPUTE_TOLERANCE): ComputeClass {
  if (ratio === null || !Number.isFinite(ratio)) return 'unmeasured';
  // 1e-9: a ratio exactly on the boundary can round a hair outside it ((7.1 + 1) / 9 = 0.8999999999999999)
  if (ratio > 1 + tolerance + 1e-9) return 'more';
  if (ratio < 1 - tolerance - 1e-9) return 'less';
  return 'matched';
}

export function analyseRuns(runs: readonly RunRecord[], opts: { topK: number; baseline?: UnigramBaseline | null }): BenchAnalysis {
  const dense = runs.find((r) => r.kind === 'dense' && r.status === 'done' && r.final);
  const denseFinalLoss = dense?.final?.loss ?? null;
  const denseTokens = dense ? dense.tokens : null;
  const baseline = opts.baseline ?? null;
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
    const meanExpertsPerToken = moe ? measuredExpertsPerToken(r) : null;
    const ratio = meanExpertsPerToken === null ? null : computeVsDense(meanExpertsPerToken, opts.topK, sharedExpertUnits(r.model));
    return {
      name: r.name,
      kind: r.kind,
      status: r.status,
      rank: ok ? order.indexOf(r.name) + 1 : null,
      finalLoss: ok ? r.final!.loss : null,
      seeds: seedLosses.length,
      lossStd: st ? st.std : null,
      lossStderr: st ? st.stderr : null,
      interval: st ? { low: st.low, high: st.high, coverage: st.coverage, t: st.t } : null,
      seedLosses,
      deltaVsDense: ok && denseFinalLoss !== null ? r.final!.loss - denseFinalLoss : null,
      vsDense: 'unmeasured',
      diffVsDense: null,
      saving,
      specialisation: spec,
      meanSpecialisation: spec.length ? spec.reduce((s, x) => s + x.normalized, 0) / spec.length : null,
      lateLoadCV: moe ? lateMean(r.intervals, 'loadCV') : null,
      lateDroppedFraction: moe ? lateMean(r.intervals, 'droppedFraction') : null,
      meanRouterEntropy: moe ? mean(r.intervals.map((i) => i.routerEntropy)) : null,
      meanExpertsPerToken,
      computeVsDense: ratio,
      compute: r.kind === 'dense' ? 'matched' : moe ? classifyCompute(ratio) : 'unmeasured',
      undertrained: ok && baseline !== null && Number.isFinite(baseline.loss) ? !clearlyBelowBaseline(r.final!.loss, baseline.loss) : false,
      tokensPerSec: r.tokensPerSec,
      batchDependent: r.kind === 'moe' && isBatchDependent(r.model.router_type),
    };
  });
  const denseA = routers.find((r) => r.name === dense?.name);
  if (denseA) {
    for (const r of routers) {
      if (r === denseA || r.finalLoss === null) continue;
      const c = compareLoss(r, denseA);
      r.vsDense = c.verdict;
      r.diffVsDense = c.comparison ? { low: c.comparison.low, high: c.comparison.high, df: c.comparison.df } : null;
    }
  }
  const seeds = Math.max(1, ...routers.map((r) => r.seeds));
  const finishedMoE = routers.filter((r) => r.kind === 'moe' && r.finalLoss !== null);
  const smoke = baseline !== null && ((denseA?.undertrained ?? false) || (finishedMoE.length > 0 && finishedMoE.every((r) => r.undertrained)));
  const analysis: BenchAnalysis = {
    reference: dense?.name ?? null,
    denseFinalLoss,
    denseTokens,
    routers,
    seeds,
    baseline,
    smoke,
    noise: seedNoise(routers),
    coverage: COVERAGE,
    recommendation: [],
  };
  analysis.recommendation = recommend(analysis, runs, opts.topK);
  return analysis;
}

function mean(xs: number[]): number {
  return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : 0;
}

/**
 * Mean experts per token over training (the interval metrics); without interval metrics, the final
 * evaluation's; null when neither is a finite number (the run's compute is then unmeasured).
 */
function measuredExpertsPerToken(r: RunRecord): number | null {
  const xs = r.intervals.map((i) => i.expertsPerToken).filter((x) => Number.isFinite(x));
  if (xs.length) return mean(xs);
  const fin = r.final?.routing.expertsPerToken;
  return typeof fin === 'number' && Number.isFinite(fin) ? fin : null;
}

function interval(r: RouterAnalysis): string {
  return r.interval ? `, ${cov} t-interval ${fmt(r.interval.low)}–${fmt(r.interval.high)}, n = ${r.seeds}` : '';
}

/** Sentences (with **bold** markers) saying which router to use on this data and why. */
export function recommend(a: BenchAnalysis, runs: readonly RunRecord[], topK: number): string[] {
  const moe = a.routers.filter((r) => r.kind === 'moe' && r.status === 'done' && r.finalLoss !== null);
  const out: string[] = [];
  if (!moe.length) return ['No MoE run finished, so there is nothing to recommend yet.'];
  const d = a.denseFinalLoss;
  const dense = a.routers.find((r) => r.kind === 'dense' && r.finalLoss !== null);
  const multi = a.seeds > 1;
  const base = a.baseline;

  // 0. did anything learn?
  if (a.smoke && base) {
    const who = dense?.undertrained ? `the dense baseline (${fmt(dense.finalLoss!)})` : `every router (best ${fmt(Math.min(...moe.map((r) => r.finalLoss!)))})`;
    out.push(
      `**No recommendation: undertrained smoke run.** The validation loss of ${who} is not clearly below the unigram baseline of this data, ${fmt(base.loss)} nats/token (a model that knows only token frequencies; "clearly" = at least ${Math.round(TRAINED_MARGIN * 100)}% below it). These models have learnt little beyond token frequencies, so their differences say nothing about the routers. Use this run to check that everything works; compare routers with the default preset or more --steps.`,
    );
    return out;
  }
  const trained = moe.filter((r) => !r.undertrained);
  if (base && trained.length < moe.length) {
    out.push(
      `${list(moe.filter((r) => r.undertrained).map((r) => `${r.name} (${fmt(r.finalLoss!)})`))} did not get clearly below the unigram baseline (${fmt(base.loss)}) and ${moe.length - trained.length === 1 ? 'is' : 'are'} left out of the recommendation.`,
    );
  }

  const matched = trained.filter((r) => r.compute === 'matched' || r.compute === 'less');
  const pool = matched.length ? matched : trained;
  const byLoss = [...pool].sort((x, y) => x.finalLoss! - y.finalLoss!);
  const best = byLoss[0];

  // 1. quality, at matched compute
  let s = multi
    ? `Lowest mean validation loss at matched compute over ${a.seeds} seeds: **${best.name}** (${fmt(best.finalLoss!)}${interval(best)}`
    : `Lowest validation loss at matched compute: **${best.name}** (${fmt(best.finalLoss!)}`;
  if (d !== null) s += `; ${denseSentence(best, d)}`;
  if (best.saving?.ratio != null) s += `; it reached the dense model's final loss after ${pct(best.saving.ratio)} of the dense token budget`;
  out.push(s + ').');
  const others = byLoss.slice(1);
  if (multi) {
    const tied = others.filter((r) => compareLoss(r, best).verdict === 'tied');
    if (tied.length) {
      out.push(
        `${list(tied.map((r) => `**${r.name}**`))} ${tied.length === 1 ? 'is' : 'are'} not distinguishable from it: the ${cov} Welch interval of the difference of seed means contains 0, so treat ${tied.length === 1 ? 'the two' : 'them'} as tied.`,
      );
    } else if (others.length) out.push(`Every other router's mean is above it beyond seed noise (${cov} Welch intervals of the differences exclude 0).`);
    if (a.noise) {
      out.push(
        `Measured seed noise: the final loss varies by ${fmt(a.noise.pooledStd)} nats (standard deviation, pooled over ${a.noise.models} models, ${a.noise.df} degrees of freedom), so with ${a.noise.n} seeds differences below about ${fmt(a.noise.threshold)} cannot be resolved.`,
      );
    }
  } else if (others.length) {
    out.push(`With one seed the seed-to-seed noise is not measured, so none of these differences is tested against it: rerun with --seeds 3 to see which routers are distinguishable.`);
  }
  if (dense) {
    const v = (k: RouterAnalysis['vsDense']) => trained.filter((r) => r.vsDense === k);
    if (multi) {
      const below = v('lower');
      const tied = v('tied');
      const above = v('higher');
      const parts = [
        below.length ? `${below.length} below it beyond seed noise (${list(below.map((r) => r.name))})` : 'none below it beyond seed noise',
        tied.length ? `${tied.length} not distinguishable from it (${list(tied.map((r) => r.name))})` : '',
        above.length ? `${above.length} above it (${list(above.map((r) => r.name))})` : '',
      ].filter(Boolean);
      out.push(`Against the dense baseline (same ${cov} Welch rule): of ${trained.length} trained routers, ${list(parts)}.`);
    } else {
      const beat = trained.filter((r) => r.finalLoss! < d!);
      out.push(`${beat.length} of ${trained.length} routers ended below the dense baseline's ${fmt(d!)} (one seed: not tested against seed noise).`);
    }
    if (!trained.some((r) => r.finalLoss! < d!)) {
      out.push(
        `No router ended below the dense baseline within this budget; MoE gains usually need more training tokens than a short CPU run gives, so rerun with more --steps before drawing conclusions.`,
      );
    }
  }

  // 2. compute matching
  const more = trained.filter((r) => r.compute === 'more');
  if (more.length) {
    out.push(
      `Listed apart, not ranked with the others: ${list(more.map((r) => `${r.name} (${fmt(r.meanExpertsPerToken!, 2)} experts/token, ${fmt(r.computeVsDense!, 2)}× the dense baseline's FFN compute; loss ${fmt(r.finalLoss!)})`))} used more active compute than k = ${topK} experts per token (more than ${Math.round(COMPUTE_TOLERANCE * 100)}% above dense, measured), so ${more.length === 1 ? 'its loss is' : 'their losses are'} not comparable at matched compute.`,
    );
  }
  const unmeasured = trained.filter((r) => r.compute === 'unmeasured');
  if (unmeasured.length) {
    out.push(
      `${list(unmeasured.map((r) => r.name))} recorded no experts-per-token measurement, so ${unmeasured.length === 1 ? 'its' : 'their'} compute is not shown to be matched and ${unmeasured.length === 1 ? 'it is' : 'they are'} listed apart.`,
    );
  }
  const less = trained.filter((r) => r.compute === 'less');
  if (less.length) {
    out.push(
      `${list(less.map((r) => `${r.name} (${fmt(r.meanExpertsPerToken!, 2)} experts/token)`))} used less active compute than k = ${topK} experts per token (fixed top-1, or fewer experts for some tokens), so ${less.length === 1 ? 'it is' : 'they are'} ranked at a compute disadvantage.`,
    );
  }

  // 3. balance and drops
  const balanced = [...trained].sort((x, y) => x.lateLoadCV! - y.lateLoadCV!);
  if (balanced.length) {
    out.push(
      `Most even expert load: **${balanced[0].name}** (load CV ${fmt(balanced[0].lateLoadCV!, 2)} over the second half of training)${balanced.length > 1 ? `; least even: ${balanced[balanced.length - 1].name} (CV ${fmt(balanced[balanced.length - 1].lateLoadCV!, 2)})` : ''}.`,
    );
  }
  const droppers = trained.filter((r) => r.lateDroppedFraction! > 0.01);
  if (droppers.length) {
    out.push(
      `${list(droppers.map((r) => `${r.name} (${pct(r.lateDroppedFraction!)})`))} dropped token assignments to expert capacity late in training; dropped tokens skip the FFN, which costs quality on skewed data.`,
    );
  }

  // 4. speed
  const fastest = [...trained].sort((x, y) => y.tokensPerSec - x.tokensPerSec)[0];
  if (fastest) {
    out.push(
      `Fastest: **${fastest.name}** (${Math.round(fastest.tokensPerSec)} tokens/s${dense ? ` vs ${Math.round(dense.tokensPerSec)} for dense` : ''}); throughput was measured one run after another on a shared CPU, so differences under about 15% are not meaningful.`,
    );
  }
  const batchDep = trained.filter((r) => r.batchDependent);
  if (batchDep.length) {
    out.push(
      `${list(batchDep.map((r) => r.name))} route${batchDep.length === 1 ? 's' : ''} each token using the other tokens of the batch, so ${batchDep.length === 1 ? 'it' : 'they'} cannot be used for incremental (KV-cached) decoding as trained: generation would not match the training-time routing. Fine for encoders and batch scoring, not for autoregressive generation.`,
    );
  }

  // 5. the recommendation
  const excluded = (r: RouterAnalysis): string | null =>
    r.batchDependent
      ? 'depends on the batch'
      : r.lateDroppedFraction! > 0.05
        ? 'drops many tokens'
        : r.compute === 'more'
          ? `uses ${fmt(r.meanExpertsPerToken!, 2)} experts per token`
          : r.compute === 'unmeasured'
            ? 'has no measured experts per token'
            : null;
  const allByLoss = [...trained].sort((x, y) => x.finalLoss! - y.finalLoss!);
  const usable = allByLoss.filter((r) => excluded(r) === null);
  if (!usable.length) {
    out.push(`**No recommendation:** every trained router is excluded (${list(allByLoss.map((r) => `${r.name} ${excluded(r)}`))}).`);
    return out;
  }
  const pick = usable[0];
  if (dense && pick.vsDense === 'higher') {
    out.push(
      `**Recommendation:** on this data and budget, use **the dense baseline**: the best usable router, ${pick.name}, is above it beyond seed noise (${fmt(pick.finalLoss!)} vs ${fmt(dense.finalLoss!)}).`,
    );
    return out;
  }
  let rec = `**Recommendation:** on this data, use **${pick.name}**`;
  const why: string[] = [];
  const better = allByLoss.slice(0, allByLoss.indexOf(pick));
  why.push(
    better.length
      ? `it had the lowest ${multi ? 'mean ' : ''}validation loss among routers usable for generation at matched compute (${list(better.map((r) => `${r.name} ${excluded(r)}`))})`
      : `it had the lowest ${multi ? 'mean ' : ''}validation loss`,
  );
  if (pick === balanced[0]) why.push('the most even expert load');
  else if (pick.lateLoadCV! < 0.3) why.push('a well balanced load');
  if (pick.saving?.ratio != null && pick.saving.ratio < 1) why.push(`${pct(1 - pick.saving.ratio)} less training compute than dense for the same loss`);
  rec += `: ${list(why)}.`;
  if (dense && pick.vsDense === 'tied') rec += ` It is not distinguishable from the dense baseline at this budget (${cov} Welch interval of the difference contains 0).`;
  if (multi) {
    const alsoTied = usable.filter((r) => r !== pick && compareLoss(r, pick).verdict === 'tied');
    if (alsoTied.length) {
      const faster = alsoTied.filter((r) => r.tokensPerSec > pick.tokensPerSec * 1.15);
      rec += ` ${list(alsoTied.map((r) => r.name))} ${alsoTied.length === 1 ? 'is' : 'are'} statistically tied with it over ${a.seeds} seeds${faster.length ? `, and ${list(faster.map((r) => r.name))} ran faster here` : ''}; the loss alone does not separate them, so choose on speed or balance.`;
    } else if (usable.length > 1) rec += ` Over ${a.seeds} seeds its mean is below every other usable router's beyond seed noise.`;
  } else {
    rec += ` Provisional: one seed, so the margin over the next routers is not tested against seed noise; confirm with --seeds 3.`;
  }
  out.push(rec);
  return out;
}

/** How a router's final loss compares with the dense baseline, by the shared rule. */
function denseSentence(r: RouterAnalysis, d: number): string {
  const delta = r.finalLoss! - d;
  const by = `${fmt(Math.abs(delta))} ${delta < 0 ? 'below' : 'above'} the FLOP-matched dense baseline's ${fmt(d)}`;
  const ci = r.diffVsDense ? ` (${cov} Welch interval of the difference ${signed(r.diffVsDense.low)} to ${signed(r.diffVsDense.high)})` : '';
  switch (r.vsDense) {
    case 'lower':
      return `${by}, beyond seed noise${ci}`;
    case 'higher':
      return `${by}, beyond seed noise${ci}`;
    case 'tied':
      return `${by}, which is within seed noise${ci}: not distinguishable from dense`;
    default:
      return `${by} (one seed: not tested against seed noise)`;
  }
}

function signed(x: number): string {
  return `${x < 0 ? '−' : '+'}${fmt(Math.abs(x))}`;
}

function list(xs: string[]): string {
  if (xs.length <= 1) return xs.join('');
  return `${xs.slice(0, -1).join(', ')} and ${xs[xs.length - 1]}`;
}
