/**
 * Autoregressive generation with the KV cache: the prompt runs once (prefill), then each step
 * feeds only the newly sampled token. Text streams through createStreamDecoder so a multibyte
 * character split across byte tokens is emitted whole.
 */
import { noGrad } from '../tensor/tensor.js';
import type { StateDict } from '../nn/module.js';
import { Rng } from '../tensor/random.js';
import { MoETransformerLM, asTransformer } from '../models/transformer.js';
import { buildModel } from '../models/build.js';
import type { LanguageModel, ModelCache } from '../models/family.js';
import { parseRunConfig, type RunConfig } from '../models/config.js';
import { createStreamDecoder, loadTokenizer, type Tokenizer } from '../data/tokenizer/index.js';
import { loadCheckpoint } from '../io/checkpoint.js';
import { CheckpointError, type TrainerState } from '../io/checkpoint-bytes.js';
import { fromGGUF, isGGUFFile } from '../io/gguf/index.js';
import { Sampler, type SamplingOptions } from './sampling.js';
import { traceLayers } from '../moe/trace.js';
import { DecodeEngine } from './decode.js';
import type { QuantFormat, QuantKernels } from '../kernels/quant.js';
import { ExpertOverride, type LayerExpertOverride, type RoutingOverride } from '../moe/override.js';
import { checkExpertOverrides, contrastLogits, defaultWeakRank, moeLayerIndices, setRoutingOverrides, type ContrastOptions } from './steer.js';

/**
 * What happens when the next step would go past max_position_embeddings:
 * - 'stop' (default): end generation with stopReason 'context_full' and a note.
 * - 'slide': drop the cache and re-prefill the last floor(max_position_embeddings / 2) tokens
 *   (prompt + generated), then continue; costs one prefill per slide, and the model forgets
 *   everything before the window.
 */
export type ContextOverflow = 'stop' | 'slide';

export interface GenerateOptions extends SamplingOptions {
  /** Tokens to sample at most (>= 0). */
  maxNewTokens: number;
  /** Seeds the sampler (and the router context's Rng); same seed, same text. Default 0. */
  seed?: number;
  /** Stop as soon as the generated text contains this; `text` ends just before it. */
  stopOnText?: string;
  /** Encode the prompt with the tokenizer's special tokens (e.g. <s>), as transformers does by default. Default false. */
  addSpecialTokens?: boolean;
  /** Stop when one of these ids is sampled (e.g. the tokenizer's eos); its text is not added to `text`. */
  stopTokenIds?: ArrayLike<number>;
  /** Receives generated text as it becomes final; the pieces concatenate to `text`. */
  onText?: (piece: string) => void;
  contextOverflow?: ContextOverflow;
  /**
   * Record which experts each token used in each MoE layer (prompt and generated tokens) in
   * `result.routing`. Costs one extra forward step for the last generated token; the text is
   * unchanged.
   */
  traceRouting?: boolean;
  /**
   * 'fast' (the DecodeEngine: preallocated KV cache, matrix-vector kernels, optional quantised
   * weights), 'eager' (model.forward, the reference), or a prebuilt DecodeEngine of this model
   * (reused across calls; its cache is reset). Default 'auto': fast where the model is supported
   * and routing is not traced, else eager.
   */
  engine?: 'auto' | 'fast' | 'eager' | DecodeEngine;
  /** Weight format of the fast path (default f32); ignored by the eager path. */
  quant?: QuantFormat;
  /** Kernels of the fast path (default the js reference; moe-ts/node's WasmQuantKernels is SIMD). */
  kernels?: QuantKernels;
  /**
   * Force / forbid experts per MoE layer for the whole generation (Mixture of Tunable Experts,
   * 2025): forbidden experts never route, forced ones are in every token's top-k.
   */
  experts?: LayerExpertOverride[];
  /**
   * Self-contrast decoding (SCMoE, 2024): a second, weak pass (each token through its rank-r
   * expert only) with its own KV cache; the sampler sees (1 + β) · strong − β · weak on the
   * plausible tokens. Costs one more forward per token.
   */
  contrast?: ContrastOptions;
}

/** One token's routing: its experts and combine weights per MoE layer (highest weight first). */
export interface TokenRouting {
  id: number;
  /** The token's own text (a byte of a multibyte character decodes to U+FFFD). */
  text: string;
  prompt: boolean;
  /**
   * Per MoE layer (and sub-layer, `sub`, where a layer has several: CartesianMoE's A and B) the
   * experts that computed on the token: its number of experts actually used is experts.length
   * (0..E for dynamic routers; null experts are not experts). `dropped`: capacity-dropped ones.
   */
  layers: { layer: number; sub?: number; experts: number[]; weights: number[]; dropped?: number[] }[];
}

export type StopReason = 'max_new_tokens' | 'stop_text' | 'stop_token' | 'context_full';

export interface GenerateResult {
  /** Generated text only (the prompt is not repeated); cut before stopOnText if it was hit. */
  text: string;
  /** Every sampled token id, including those that spelled stopOnText and a final stop token. */
  ids: Int32Array;
  promptTokens: number;
  /** Generated tokens per second of wall time, prefill included. */
  tokensPerSec: number;
  stopReason: StopReason;
  /** Human-readable explanation when generation ended early or the window slid. */
  note?: string;
  /** How many times the context window slid (contextOverflow 'slide'). */
  slides: number;
  prefillMs: number;
  totalMs: number;
  /** Prompt tokens per second of the (first) prefill. */
  promptTokensPerSec: number;
  /** Tokens fed back one at a time per second (decode steps only, prefill excluded). */
  decodeTokensPerSec: number;
  /** Which path ran ('fast' with its weight format, or 'eager'). */
  engine: string;
  /** Time spent building the fast path's weights (not in totalMs). */
  compileMs: number;
  /** With traceRouting: one entry per prompt token, then per generated token. */
  routing?: TokenRouting[];
}

/** Length of the longest suffix of `text` that is a proper prefix of `stop` (text that may still become the stop string). */
function pendingStopPrefix(text: string, stop: string): number {
  const max = Math.min(stop.length - 1, text.length);
  for (let n = max; n > 0; n--) {
    if (text.endsWith(stop.slice(0, n))) return n;
  }
  return 0;
}

function checkOptions(opts: GenerateOptions): void {
  if (typeof opts !== 'object' || opts === null) throw new Error('generate: options object required ({ maxNewTokens, ... })');
  if (typeof opts.maxNewTokens !== 'number' || !Number.isInteger(opts.maxNewTokens) || opts.maxNewTokens < 0) {
    throw new Error(`generate: maxNewTokens must be an integer >= 0, got ${opts.maxNewTokens}`);
  }
  if (opts.seed !== undefined && (typeof opts.seed !== 'number' || !Number.isInteger(opts.seed))) {
    throw new Error(`generate: seed must be an integer, got ${opts.seed}`);
  }
  if (opts.stopOnText !== undefined && (typeof opts.stopOnText !== 'string' || opts.stopOnText.length === 0)) {
    throw new Error(`generate: stopOnText must be a non-empty string, got ${JSON.stringify(opts.stopOnText)}`);
  }
  if (opts.onText !== undefined && typeof opts.onText !== 'function') throw new Error('generate: onText must be a function');
  if (opts.stopTokenIds !== undefined) {
    const ids = opts.stopTokenIds;
    if (typeof ids !== 'object' || ids === null || typeof ids.length !== 'number') throw new Error('generate: stopTokenIds must be an array of token ids');
    for (let i = 0; i < ids.length; i++) {
      if (!Number.isInteger(ids[i]) || ids[i] < 0) throw new Error(`generate: stopTokenIds[${i}] must be a token id, got ${ids[i]}`);
    }
  }
  if (opts.contrast !== undefined) {
    const c = opts.contrast;
    if (typeof c !== 'object' || c === null) throw new Error('generate: contrast must be { beta, alpha?, weakRank? }');
    if (!(typeof c.beta === 'number' && Number.isFinite(c.beta) && c.beta >= 0)) throw new Error(`generate: contrast.beta must be a finite number >= 0, got ${c.beta}`);
    if (c.alpha !== undefined && !(typeof c.alpha === 'number' && c.alpha >= 0 && c.alpha < 1)) throw new Error(`generate: contrast.alpha must be in [0, 1), got ${c.alpha}`);
    if (c.weakRank !== undefined && !(Number.isInteger(c.weakRank) && c.weakRank >= 1)) throw new Error(`generate: contrast.weakRank must be an integer >= 1, got ${c.weakRank}`);
  }
  if (opts.contextOverflow !== undefined && opts.contextOverflow !== 'stop' && opts.contextOverflow !== 'slide') {
    throw new Error(`generate: contextOverflow must be "stop" or "slide", got ${JSON.stringify(opts.contextOverflow)}`);
  }
}

/**
 * Generate a continuation of `prompt`. An empty prompt is an error: the tokenizers have no BOS
 * token, so there is nothing to condition on (pass e.g. "\n" to start a fresh line).
 */
export function generate(model: LanguageModel, tokenizer: Tokenizer, prompt: string, opts: GenerateOptions): GenerateResult {
  checkOptions(opts);
  if (typeof prompt !== 'string') throw new Error(`generate: prompt must be a string, got ${typeof prompt}`);
  const V = model.config.vocab_size;
  if (tokenizer.vocabSize > V) {
    throw new Error(`generate: tokenizer ${tokenizer.name} has ${tokenizer.vocabSize} tokens but the model's vocab_size is ${V}`);
  }
  const promptIds = tokenizer.encode(prompt, { addSpecialTokens: Boolean(opts.addSpecialTokens) });
  if (promptIds.length === 0) {
    throw new Error('generate: empty prompt; the tokenizer has no BOS token, so give at least one character (e.g. "\\n")');
  }
  const maxPos = model.config.max_position_embeddings;
  const overflow = opts.contextOverflow ?? 'stop';
  const window = Math.max(1, Math.floor(maxPos / 2));
  const seed = opts.seed ?? 0;
  const sampler = new Sampler(opts, new Rng(seed));
  // routers get their own stream so sampling draws don't depend on whether a router consumes randomness
  const routerRng = new Rng((seed ^ 0x5bd1e995) >>> 0);
  const Vt = tokenizer.vocabSize;
  const stopIds = new Set<number>(Array.from(opts.stopTokenIds ?? []));

  const mod = model.config.mixture_of_depths;
  if (mod && model.depthCaps?.some((x) => x < 1)) {
    // top-k over a sequence needs its future: only the per-token causal rule decodes token by token
    if (mod.inference !== 'causal') throw new Error('generate: mixture_of_depths.inference "topk" is not causal; generate with inference "causal" (the trained per-token rule)');
  }
  const want = opts.engine ?? 'auto';
  if (!(want instanceof DecodeEngine) && !['auto', 'fast', 'eager'].includes(want)) {
    throw new Error(`generate: engine must be "auto", "fast", "eager" or a DecodeEngine, got ${JSON.stringify(want)}`);
  }
  if (want instanceof DecodeEngine && want.model !== model) throw new Error('generate: engine was built for a different model');
  if (want === 'fast' && opts.traceRouting) throw new Error('generate: traceRouting needs the eager engine (engine "eager" or "auto")');
  const tc = performance.now();
  let engine: DecodeEngine | null = null;
  // quantised weights live only in the fast engine: a family without it says so instead of ignoring --quant
  if (opts.quant !== undefined && opts.quant !== 'f32') asTransformer(model, 'decodeEngine', `generate: quant ${opts.quant}`);
  if (want instanceof DecodeEngine) engine = opts.traceRouting ? null : want;
  else if (want === 'fast' || (want === 'auto' && !opts.traceRouting && model instanceof MoETransformerLM && DecodeEngine.unsupported(model) === null)) {
    engine = new DecodeEngine(asTransformer(model, 'decodeEngine', 'generate: engine "fast" (--quant)'), { quant: opts.quant, seed, ...(opts.kernels ? { kernels: opts.kernels } : {}) });
    // a model feature the fast path does not know of shows up as different logits: stay eager then
    if (want === 'auto' && engine.quant === 'f32' && !(engine.selfCheck() < 1e-3)) engine = null;
  }
  engine?.reset();
  // steering reads layers[i].block_sparse_moe, which every family's layers have (same field name)
  const steered = model as MoETransformerLM;
  const experts = opts.experts ?? [];
  // models without decoder layers (scripted test models) never reach the override code
  if (experts.length) checkExpertOverrides(steered, experts, 'generate: experts');
  const contrast = opts.contrast;
  if (contrast && moeLayerIndices(steered).length === 0) throw new Error('generate: contrast needs a model with MoE layers (a dense model has no weak expert activation)');
  const weakRank = contrast ? (contrast.weakRank ?? defaultWeakRank(steered)) : 0;
  // the weak pass has its own hidden states, so its own KV cache (and fast engine)
  const weakEngine = contrast && engine ? new DecodeEngine(steered, { quant: engine.quant, seed, ...(opts.kernels ? { kernels: opts.kernels } : {}) }) : null;
  const strongMap = new Map<number, RoutingOverride | null>(experts.map((o) => [o.layer, new ExpertOverride(o)]));
  const weakMap = new Map<number, RoutingOverride | null>((contrast ? moeLayerIndices(steered) : []).map((i) => [i, new ExpertOverride({ ...experts.find((o) => o.layer === i), rank: weakRank })]));
  const compileMs = want instanceof DecodeEngine ? 0 : performance.now() - tc;

  const t0 = performance.now();
  const wasTraining = model.training;
  model.eval();
  const restore = experts.length || contrast ? setRoutingOverrides(steered, strongMap) : () => {};
  try {
    return noGrad(() => {
      const trace: TokenRouting[] | undefined = opts.traceRouting ? [] : undefined;
      let tracedGenerated = 0;
      /**
       * Run `ids` through the model, extending `cache`; the last position's logits, cut to the
       * tokenizer's vocabulary. Traces the routing of positions from `traceFrom` on (a re-prefill
       * after a slide only adds its last token).
       */
      let weakCache: ModelCache | undefined = contrast ? model.emptyCache() : undefined;
      /** The weak pass on the same tokens (its own cache), under the rank-r overrides. */
      const weakStep = (ids: Int32Array): Float32Array => {
        const back = setRoutingOverrides(steered, weakMap);
        try {
          if (weakEngine) return weakEngine.forward(ids).subarray(0, Vt);
          const { logits } = model.forward(ids, 1, ids.length, { ctx: { training: false, step: 0, rng: routerRng }, cache: weakCache! });
          return logits.data.subarray((ids.length - 1) * V, (ids.length - 1) * V + Vt);
        } finally {
          back();
        }
      };
      const step = (ids: Int32Array, cache: ModelCache, traceFrom = 0, prompt = false): Float32Array => {
        const strong = strongStep(ids, cache, traceFrom, prompt);
        return contrast ? contrastLogits(strong, weakStep(ids), contrast.beta, contrast.alpha ?? 0.1) : strong;
      };
      const strongStep = (ids: Int32Array, cache: ModelCache, traceFrom: number, prompt: boolean): Float32Array => {
        if (engine) {
          const out = engine.forward(ids);
          cache.length = engine.length;
          return out.subarray(0, Vt);
        }
        const { logits, aux } = model.forward(ids, 1, ids.length, { ctx: { training: false, step: 0, rng: routerRng }, cache });
        if (trace) {
          // a depth-routed layer's records cover only its chosen tokens: traced are the full layers
          const per = traceLayers(
            aux.filter((a) => (model.depthCaps?.[a.layer] ?? 1) >= 1),
            ids.length,
          );
          for (let t = traceFrom; t < ids.length; t++) {
            trace.push({ id: ids[t], text: tokenizer.decode(ids.subarray(t, t + 1)), prompt, layers: per.map(({ experts, ...p }) => ({ ...p, ...experts[t] })) });
            if (!prompt) tracedGenerated++;
          }
        }
        return logits.data.subarray((ids.length - 1) * V, (ids.length - 1) * V + Vt);
      };

      const history: number[] = Array.from(promptIds);
      const generated: number[] = [];
      let slides = 0;
      let note: string | undefined;
      let stopReason: StopReason = 'max_new_tokens';

      let cache = model.emptyCache();
      let prefillIds = promptIds;
      if (promptIds.length > maxPos) {
        if (overflow === 'stop') {
          throw new Error(`generate: prompt is ${promptIds.length} tokens, more than max_position_embeddings ${maxPos}; shorten it or use contextOverflow "slide"`);
        }
        prefillIds = promptIds.slice(promptIds.length - window);
        slides++;
        note = `prompt of ${promptIds.length} tokens exceeds max_position_embeddings ${maxPos}; kept its last ${window} tokens`;
      }
      let logits = step(prefillIds, cache, 0, true);
      const prefillMs = performance.now() - t0;
      const firstPrefill = prefillIds.length;
      let decodeSteps = 0;
      let decodeMs = 0;

      const decoder = createStreamDecoder(tokenizer);
      const stop = opts.stopOnText;
      let text = '';
      let emitted = 0;
      const emit = (upTo: number): void => {
        if (upTo > emitted) {
          opts.onText?.(text.slice(emitted, upTo));
          emitted = upTo;
        }
      };
      /** Append decoded text; true when the stop string appeared (text is then cut before it). */
      const append = (piece: string): boolean => {
        if (!piece) return false;
        const from = Math.max(0, text.length - (stop ? stop.length - 1 : 0));
        text += piece;
        if (stop) {
          const at = text.indexOf(stop, from);
          if (at >= 0) {
            text = text.slice(0, at);
            emit(text.length);
            return true;
          }
          emit(text.length - pendingStopPrefix(text, stop));
        } else emit(text.length);
        return false;
      };

      let hitStop = false;
      for (let n = 0; n < opts.maxNewTokens; n++) {
        const next = sampler.next(logits);
        generated.push(next);
        history.push(next);
        if (stopIds.has(next)) {
          stopReason = 'stop_token';
          break;
        }
        if (append(decoder.push(next))) {
          hitStop = true;
          stopReason = 'stop_text';
          break;
        }
        if (n + 1 === opts.maxNewTokens) break;
        if (cache.length + 1 > maxPos) {
          if (overflow === 'stop') {
            stopReason = 'context_full';
            note = `stopped after ${generated.length} of ${opts.maxNewTokens} tokens: the context reached max_position_embeddings ${maxPos} (contextOverflow "slide" continues with a sliding window)`;
            break;
          }
          cache = model.emptyCache();
          engine?.reset();
          if (contrast) weakCache = model.emptyCache();
          weakEngine?.reset();
          logits = step(Int32Array.from(history.slice(history.length - window)), cache, window - 1);
          slides++;
          note = `context window slid ${slides} time(s): re-prefilled the last ${window} of max_position_embeddings ${maxPos} tokens`;
          continue;
        }
        const ts = performance.now();
        logits = step(Int32Array.of(next), cache);
        decodeMs += performance.now() - ts;
        decodeSteps++;
      }
      if (!hitStop && append(decoder.flush())) stopReason = 'stop_text';
      emit(text.length);
      if (trace && generated.length) {
        // the last sampled token was never fed back; one more step shows its routing (if the context has room)
        const last = generated[generated.length - 1];
        if (tracedGenerated < generated.length && cache.length + 1 <= maxPos) step(Int32Array.of(last), cache);
        else if (tracedGenerated < generated.length) trace.push({ id: last, text: tokenizer.decode(Int32Array.of(last)), prompt: false, layers: [] });
      }

      const totalMs = performance.now() - t0;
      return {
        text,
        ids: Int32Array.from(generated),
        promptTokens: promptIds.length,
        tokensPerSec: totalMs > 0 ? generated.length / (totalMs / 1000) : 0,
        stopReason,
        ...(note !== undefined ? { note } : {}),
        slides,
        prefillMs,
        totalMs,
        promptTokensPerSec: prefillMs > 0 ? firstPrefill / (prefillMs / 1000) : 0,
        decodeTokensPerSec: decodeMs > 0 ? decodeSteps / (decodeMs / 1000) : 0,
        engine: engine ? `fast ${engine.quant}` : 'eager',
        compileMs,
        ...(trace ? { routing: trace } : {}),
      };
    });
  } finally {
    restore();
    model.train(wasTraining);
  }
}

export interface InferenceModel {
  model: LanguageModel;
  tokenizer: Tokenizer;
  config: RunConfig;
  /** The checkpoint directory actually loaded (a run directory resolves via latest.json). */
  dir: string;
  step: number;
}

/**
 * Load a model for generation, in eval mode: a checkpoint (run directory, step directory or
 * single-file checkpoint, without optimizer moments) or a GGUF file (by its magic; quantised
 * tensors dequantised; the run config is the defaults around the file's model config).
 */
export function loadModelForInference(ckptPath: string, opts: { allowNonFinite?: boolean } = {}): InferenceModel {
  if (isGGUFFile(ckptPath)) {
    const g = fromGGUF(ckptPath);
    return { model: g.model, tokenizer: g.tokenizer, config: parseRunConfig({ model: g.config }), dir: ckptPath, step: 0 };
  }
  const ck = loadCheckpoint(ckptPath, false, { allowNonFinite: opts.allowNonFinite });
  return { ...inferenceModelFromCheckpoint(ck, ck.dir), dir: ck.dir };
}

/** A checkpoint already in memory (e.g. read from bytes in a browser) as a model in eval mode; `where` names it in errors. */
export function inferenceModelFromCheckpoint(ck: { state: TrainerState; model: StateDict }, where: string): Omit<InferenceModel, 'dir'> {
  const config = ck.state.config;
  let tokenizer: Tokenizer;
  try {
    tokenizer = loadTokenizer(ck.state.tokenizer);
  } catch (e) {
    throw new CheckpointError(`${where}/state.json field tokenizer: ${(e as Error).message}`);
  }
  if (tokenizer.vocabSize > config.model.vocab_size) {
    throw new CheckpointError(`${where}: tokenizer has ${tokenizer.vocabSize} tokens but model.vocab_size is ${config.model.vocab_size}`);
  }
  // the init is overwritten by the checkpoint; the seed only has to be fixed
  const model = buildModel(config.model, 0);
  try {
    model.loadStateDict(ck.model);
  } catch (e) {
    throw new CheckpointError(`${where}/model.safetensors does not match its config: ${(e as Error).message}`);
  }
  model.eval();
  return { model, tokenizer, config, step: ck.state.step };
}
