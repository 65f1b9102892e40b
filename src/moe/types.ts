/**
 * The narrow interfaces of the MoE layer. A router turns token representations into one typed
 * routing record; experts compute on tokens grouped by expert; dispatch moves tokens between
 * the two; balancing losses and metrics read the routing record. Each piece is registered as a
 * spec (registry.ts: factory, options schema, traits) so a config can pick it by name and a new
 * paper's idea is one new file.
 */
import type { Tensor } from '../tensor/tensor.js';
import type { Rng } from '../tensor/random.js';
import type { Module } from '../nn/module.js';

/** What a router may know besides the hidden states. */
export interface RouterContext {
  /** Training mode: noise, annealing and load-driven updates apply only then. */
  training: boolean;
  /** Global optimizer step (for schedules such as dense-to-sparse annealing). */
  step: number;
  /** Total planned steps, when known (annealing schedules). */
  totalSteps?: number;
  /** Token ids [T] aligned with the rows of x (hash routing needs them). */
  tokenIds?: Int32Array;
  /** Randomness (noisy gating). */
  rng: Rng;
  /**
   * Layout of the rows of x: `batch` sequences of `seqLen` rows each, sequence-major (Mixture of
   * Tokens groups tokens across sequences; causal pooling stays within a sequence). Absent: each row
   * is its own sequence.
   */
  batchShape?: { batch: number; seqLen: number };
  /** The model's shared token embeddings [T, dModel] aligned with x (SpeechMoE routers read them). Absent: routers that want them fall back to x. */
  embeddings?: Tensor;
  /**
   * Per-token importance [T] taken from the preceding attention: the mean attention weight the token
   * receives from the queries that can see it (DA-MoE). Supplied only when the router's traits list
   * 'tokenImportance' in `context`; absent: routers treat every token alike.
   */
  tokenImportance?: Float32Array;
  /** The layer's experts (MoELayer.forward sets it), for routers that rank experts by their own response. */
  experts?: ExpertBank;
  /**
   * Scratch shared by the layers of one model forward (the model makes a fresh Map per forward),
   * for routing state carried from layer to layer; each router keys it by its own name.
   */
  state?: Map<string, unknown>;
}

/**
 * Sparse routing: a list of (token, expert, weight) assignments. A token may appear 0..E times
 * (token choice: exactly k; expert choice and dynamic routers: variable). Assignments to
 * zero-compute "null" experts are not listed (the router reports them in metrics).
 */
export interface SparseRouting {
  kind: 'sparse';
  /** Token row of each assignment [A]. */
  tokenIdx: Int32Array;
  /** Expert of each assignment [A], in [0, numExperts). */
  expertIdx: Int32Array;
  /** Combine weight of each assignment [A] (differentiable: gradients reach the router). */
  weights: Tensor;
  /**
   * Dispatch priority of each assignment [A] (higher first) when capacity is limited;
   * defaults to the weights. Switch/GShard drop the lowest-priority overflow.
   */
  priority?: Float32Array;
}

/**
 * Soft routing (Soft MoE): each expert has `slotsPerExpert` slots; slot inputs are weighted
 * averages of all tokens and token outputs weighted averages of all slot outputs.
 */
export interface SoftRouting {
  kind: 'soft';
  slotsPerExpert: number;
  /** [T, E*S], each column (slot) sums to 1 over tokens. */
  dispatch: Tensor;
  /** [T, E*S], each row (token) sums to 1 over slots. */
  combine: Tensor;
}

export interface RouterOutput {
  /** Raw router logits [T, E] (pre-softmax / pre-sigmoid): z-loss and analysis read these. */
  logits: Tensor;
  /**
   * Normalised routing scores [T, E] in the router's own sense (softmax probabilities for
   * softmax routers, normalised sigmoid affinities for sigmoid routers), differentiable:
   * the balancing losses use them. Computed from logits exactly once.
   */
  probs: Tensor;
  routing: SparseRouting | SoftRouting;
  /** Losses the router itself defines (e.g. ReMoE's L1 sparsity), already scaled by their coefficients. */
  losses: Record<string, Tensor>;
  /** Router-specific scalar metrics (e.g. null-expert fraction, current temperature). */
  metrics: Record<string, number>;
}

export interface Router extends Module {
  readonly numExperts: number;
  route(x: Tensor, ctx: RouterContext): RouterOutput;
  /**
   * Called once per optimizer step after backward with the step's expert loads
   * (tokens per expert, summed over the layer's calls in that step), for routers that adapt
   * outside gradients (aux-loss-free bias, ReMoE's adaptive L1 coefficient).
   */
  afterStep?(load: Float64Array): void;
  /**
   * Coefficient of a two-pass consistency loss (absent or 0: none). The trainer then runs each
   * training step twice with different randomness and adds coef * the symmetric KL divergence
   * between the two passes' next-token distributions (THOR's stochastic-expert consistency).
   */
  readonly consistencyWeight?: number;
}

/** Experts computed on rows grouped contiguously by expert (sizes[e] rows for expert e). */
export interface ExpertBank extends Module {
  readonly numExperts: number;
  readonly dModel: number;
  /** x [sum(sizes), dModel] -> [sum(sizes), dModel]. */
  forwardGrouped(x: Tensor, sizes: Int32Array): Tensor;
  /** Multiply-adds per token routed to expert e (for FLOP accounting). */
  flopsPerToken(e: number): number;
  /** Expert e on one row [dModel], computed plainly in float64: the oracle of the conformance tests (src/moe/reference.ts). */
  referenceForward?(e: number, x: ArrayLike<number>): Float64Array;
}

/** A balancing / stability loss: reads the routing record, returns an unscaled scalar. */
export type BalanceLossFn = (out: RouterOutput, info: { numExperts: number; tokens: number; topK: number }) => Tensor;

/** Per-call routing metrics (cheap, returned every step). */
export interface RoutingMetrics {
  tokensPerExpert: Float64Array;
  /** Coefficient of variation of the load (std/mean). */
  loadCV: number;
  /** max load / mean load. */
  maxOverMean: number;
  /** Fraction of assignments dropped by capacity. */
  droppedFraction: number;
  /** Mean entropy (nats) of the routing distribution per token. */
  routerEntropy: number;
  /** Average number of experts computing on each token. */
  expertsPerToken: number;
  /** Router-specific extras. */
  extra: Record<string, number>;
}

export interface MoEAux {
  /** Each loss, already multiplied by its coefficient (sum them into the training loss). */
  losses: Record<string, Tensor>;
  /** The routing record (indices, weights) for later analysis. */
  router: RouterOutput;
  metrics: RoutingMetrics;
  /** Per sparse assignment, 1 if an expert computed it and 0 if capacity dropped it (absent: all computed). */
  kept?: Uint8Array;
}
