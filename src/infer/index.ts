/** Inference: next-token sampling and KV-cached generation from a model or a checkpoint. */
export { argmax, samplingDistribution, sampleNext, validateSamplingOptions, Sampler } from './sampling.js';
export type { SamplingOptions, ResolvedSampling } from './sampling.js';
export { generate, loadModelForInference } from './generate.js';
export type { GenerateOptions, GenerateResult, StopReason, ContextOverflow, InferenceModel } from './generate.js';
export { ChatSession, compileChatTemplate, renderChatTemplate, resolveChatTemplate } from './chat.js';
export type { ChatMessage, ChatOptions, ChatReply, ChatTemplateOptions } from './chat.js';
export { DecodeEngine } from './decode.js';
export type { DecodeEngineOptions } from './decode.js';
export { quantizedLoss, routingLoss } from './quality.js';
export type { QuantLoss, RoutingLoss } from './quality.js';
export { checkExpertOverrides, contrastLogits, defaultWeakRank, moeLayerIndices, setRoutingOverrides, withExpertOverrides } from './steer.js';
export type { ContrastOptions } from './steer.js';
