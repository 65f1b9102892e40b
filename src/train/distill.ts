/**
 * Knowledge distillation objective (Hinton et al., "Distilling the Knowledge in a Neural Network",
 * 2015), as a trainer hook (TrainHooks.objective): the student matches the teacher's next-token
 * distribution at temperature T plus the usual cross-entropy,
 *   loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, targets),
 * the T^2 keeping the soft term's gradient scale independent of T.
 */
import { Tensor, noGrad } from '../tensor/tensor.js';
import * as T from '../tensor/index.js';
import { Rng } from '../tensor/random.js';
import type { MoETransformerLM } from '../models/transformer.js';
import type { TrainHooks } from './trainer.js';

/** Distillation settings: temperature and the weight of the soft (KL) term. */
export interface DistillOptions {
  /** Softmax temperature of both distributions in the KL term (default 2). */
  temperature?: number;
  /** Weight of the KL term; 1 - alpha weighs the cross-entropy (default 0.5). */
  alpha?: number;
}

function check(o: DistillOptions): { temp: number; alpha: number } {
  const temp = o.temperature ?? 2;
  const alpha = o.alpha ?? 0.5;
  if (!(Number.isFinite(temp) && temp > 0)) throw new Error(`distill: temperature must be a positive number, got ${temp}`);
  if (!(alpha >= 0 && alpha <= 1)) throw new Error(`distill: alpha must be in [0, 1], got ${alpha}`);
  return { temp, alpha };
}

/**
 * The distillation loss of student logits [N, V] against teacher logits (same shape, no gradient)
 * and targets [N]; also the KL (at temperature T, mean over rows) and the CE as plain numbers.
 */
export function distillationLoss(student: Tensor, teacher: Float32Array, targets: Int32Array, o: DistillOptions = {}): { loss: Tensor; kl: number; ce: number } {
  const { temp, alpha } = check(o);
  if (student.ndim !== 2 || teacher.length !== student.size) throw new Error(`distillationLoss: teacher logits have ${teacher.length} values, student logits [${student.shape.join(', ')}]`);
  const [N, V] = student.shape;
  // teacher log-probabilities at T, in float64 for the constant side
  const lt = new Float32Array(N * V);
  const pt = new Float32Array(N * V);
  for (let r = 0; r < N; r++) {
    let mx = -Infinity;
    for (let v = 0; v < V; v++) mx = Math.max(mx, teacher[r * V + v] / temp);
    let z = 0;
    for (let v = 0; v < V; v++) z += Math.exp(teacher[r * V + v] / temp - mx);
    const lz = mx + Math.log(z);
    for (let v = 0; v < V; v++) {
      lt[r * V + v] = teacher[r * V + v] / temp - lz;
      pt[r * V + v] = Math.exp(lt[r * V + v]);
    }
  }
  const ls = T.logSoftmax(temp === 1 ? student : T.scale(student, 1 / temp), -1);
  // KL(p_t || q_s) = sum p_t (log p_t - log q_s); the log p_t term is a constant
  const klT = T.scale(T.sum(T.mul(T.tensor(pt, [N, V]), T.sub(T.tensor(lt, [N, V]), ls))), 1 / N);
  const ceT = T.crossEntropy(student, targets);
  const loss = T.add(T.scale(klT, alpha * temp * temp), T.scale(ceT, 1 - alpha));
  return { loss, kl: klT.item(), ce: ceT.item() };
}

/** The teacher's logits on a batch, in eval mode without gradients. */
export function teacherLogits(teacher: MoETransformerLM, inputs: Int32Array, batchSize: number, seqLen: number): Float32Array {
  return noGrad(() => teacher.forward(inputs, batchSize, seqLen, { ctx: { training: false, step: 0, rng: new Rng(0) } }).logits.data);
}

/** Trainer hook: each step's loss is the distillation loss against `teacher` (its router losses are not the student's concern). */
export function distillHooks(teacher: MoETransformerLM, o: DistillOptions = {}): TrainHooks {
  check(o);
  teacher.eval();
  return {
    objective: ({ inputs, targets, batchSize, seqLen, result }) => {
      const d = distillationLoss(result.logits, teacherLogits(teacher, inputs, batchSize, seqLen), targets, o);
      return { loss: d.loss, metrics: { distill_kl: d.kl, distill_ce: d.ce } };
    },
  };
}

/** Mean KL(teacher || student) at temperature 1 over windows of token ids (one sequence each). */
export function meanKL(teacher: MoETransformerLM, student: MoETransformerLM, windows: Int32Array[]): number {
  let s = 0;
  for (const w of windows) {
    const tl = teacherLogits(teacher, w, 1, w.length);
    const sl = teacherLogits(student, w, 1, w.length);
    s += noGrad(() => distillationLoss(T.tensor(sl, [w.length, sl.length / w.length]), tl, new Int32Array(w.length), { temperature: 1, alpha: 1 }).kl);
  }
  return s / Math.max(1, windows.length);
}
