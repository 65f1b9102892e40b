/**
 * `moe-ts distill`: an MoE teacher into a dense student. Knowledge gathering (One Student Knows
 * All Experts Know: From Sparse to Dense, 2022): the student's FFNs start as the router-usage-
 * weighted average of each layer's experts (mergeToDense), everything else copied; then the
 * student trains on KL to the teacher's logits plus cross-entropy (src/train/distill.ts, a
 * trainer hook). The table reports teacher vs student loss per domain and the gap.
 */
import { ConfigError, parseRunConfig } from '../models/config.js';
import { MoETransformerLM, asTransformer } from '../models/transformer.js';
import { mergeToDense } from '../models/merge.js';
import { train } from '../train/trainer.js';
import { distillHooks, meanKL } from '../train/distill.js';
import { loadAnyModel, adaptDataset, measureModel, calibrationWindows, writeAdaptReport, type AdaptReport, type MeasureOptions } from './common.js';
import { expertUsage } from './prune.js';

/** What `moe-ts distill` does. */
export interface DistillRunOptions extends MeasureOptions {
  teacher: string;
  out: string;
  /** 'gather' (default): student FFN = usage-weighted expert average; 'uniform': plain average; 'fresh': random init of the same shape. */
  init?: 'gather' | 'uniform' | 'fresh';
  temperature?: number;
  alpha?: number;
  steps?: number;
  lr?: number;
  /** Training corpora (default: the teacher run's). */
  data?: string[];
  calibration?: number;
  seed?: number;
  overwrite?: boolean;
  dataDir?: string;
}

/** The dense student before distillation: mergeToDense of the teacher, weighted by router usage on `windows` (gather), uniform, or a fresh init of that shape. */
export function initStudent(teacher: MoETransformerLM, init: 'gather' | 'uniform' | 'fresh', windows: Int32Array[], seed = 0): MoETransformerLM {
  const usage = init === 'gather' ? expertUsage(teacher, windows).weight : undefined;
  const merged = mergeToDense(teacher, usage);
  return init === 'fresh' ? new MoETransformerLM(merged.config, seed) : merged;
}

/** Build the student, distil, measure teacher / student init / student trained; the run and distill.md/json go to `out`. */
export async function runDistill(o: DistillRunOptions): Promise<AdaptReport & { files: { md: string; json: string }; klBefore: number; klAfter: number }> {
  const teacher = loadAnyModel(o.teacher);
  if (teacher.model.config.num_local_experts === 0) throw new ConfigError(`distill: teacher ${o.teacher} is a dense model (distillation here is MoE -> dense)`);
  teacher.model.eval();
  const init = o.init ?? 'gather';
  const { data } = adaptDataset(teacher, o);
  const windows = calibrationWindows(data, o.calibration ?? 8);
  const student = initStudent(teacher.model, init, windows, o.seed ?? 0).eval();
  const batches = o.batches ?? teacher.config.training.eval_batches;
  const rowsBefore = [measureModel('MoE teacher', teacher.model, data, batches), measureModel(`dense student, init (${init})`, student, data, batches)];
  const klBefore = meanKL(teacher.model, student, windows);
  const t = teacher.config.training;
  const steps = o.steps ?? 200;
  const cfg = parseRunConfig({
    ...teacher.config,
    model: student.config,
    data: { ...teacher.config.data, ...(o.data ? { sources: o.data, weights: undefined } : {}) },
    training: { ...t, steps, lr: o.lr ?? t.lr, warmup_steps: Math.min(t.warmup_steps, Math.floor(steps / 10)), seed: o.seed ?? t.seed },
  });
  const res = await train({
    config: cfg,
    outDir: o.out,
    overwrite: o.overwrite,
    dataDir: o.dataDir,
    init: { model: student.train(), tokenizer: teacher.tokenizer },
    // the whole student trains: a teacher with LoRA adapters (peft) hands its config to the student,
    // and without this the trainer's PEFT default would train the adapters alone, FFN frozen
    hooks: { ...distillHooks(teacher.model, { temperature: o.temperature, alpha: o.alpha }), trainable: () => true },
  });
  const distilled = asTransformer(res.model, 'adapt', 'distill').eval();
  const after = measureModel(`dense student, distilled ${res.steps} steps`, distilled, data, batches);
  const klAfter = meanKL(teacher.model, distilled, windows);
  const rows = [...rowsBefore, after];
  const gap = after.domains.map((d) => ({
    domain: d.domain,
    teacher: rows[0].domains.find((x) => x.domain === d.domain)!.loss,
    student: d.loss,
    gap: d.loss - rows[0].domains.find((x) => x.domain === d.domain)!.loss,
  }));
  const report: AdaptReport = {
    command: 'distill',
    summary:
      `Distillation MoE -> dense (One Student Knows All Experts Know, 2022): student FFN init ${init === 'gather' ? 'the router-usage-weighted average of the experts (knowledge gathering)' : init === 'uniform' ? 'the plain average of the experts' : 'random'}; ` +
      `${res.steps} steps of ${o.alpha ?? 0.5} * T^2 * KL(teacher || student at T=${o.temperature ?? 2}) + ${1 - (o.alpha ?? 0.5)} * CE on ${cfg.data.sources.join('+')}. ` +
      `KL(teacher || student) on the calibration windows: ${klBefore.toFixed(4)} -> ${klAfter.toFixed(4)}; student - teacher loss per domain: ${gap.map((g) => `${g.domain} ${g.gap >= 0 ? '+' : ''}${g.gap.toFixed(4)}`).join(', ')}.`,
    teacher: o.teacher,
    rows,
    gap,
    klBefore,
    klAfter,
  };
  return { ...report, klBefore, klAfter, files: writeAdaptReport(o.out, 'distill', report) };
}
