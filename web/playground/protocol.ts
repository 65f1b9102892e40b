/** Messages between the playground page (app.ts) and its engine Worker (engine.ts). */

export interface TrainSettings {
  router: string;
  numExperts: number;
  topK: number;
  /** Width of each expert's FFN. */
  expertWidth: number;
  activation: 'silu' | 'gelu';
  layers: number;
  hidden: number;
  steps: number;
  lr: number;
  batchSize: number;
  seqLen: number;
  seed: number;
  /** Also train the FLOP-matched dense model, one step after each MoE step. */
  dense: boolean;
}

export type Which = 'moe' | 'dense';

export type Request =
  | { type: 'init'; backend?: 'auto' | 'wasm' | 'js'; threads?: number }
  | { type: 'train'; settings: TrainSettings; text: string | null; textName: string }
  | { type: 'stop' }
  | { type: 'route'; text: string }
  | { type: 'generate'; prompt: string; maxNewTokens: number; temperature: number; topP: number; seed: number; which: Which }
  | { type: 'load'; files: { path: string; bytes: ArrayBuffer }[] }
  | { type: 'download' };

export interface TokenRoute {
  text: string;
  /** Experts this token was sent to, highest weight first. */
  experts: number[];
  weights: number[];
  /** The router's probabilities over all experts. */
  probs: number[];
}

export interface ModelInfo {
  source: string;
  step: number;
  params: number;
  activeParams: number;
  numExperts: number;
  topK: number;
  router: string;
  layers: number;
  denseParams?: number;
}

export type Reply =
  | { type: 'ready'; backend: string; threads: number; isolated: boolean; relaxed: boolean; routers: { name: string; description: string }[] }
  | { type: 'progress'; id: number; message: string; fraction?: number }
  | { type: 'step'; which: Which; step: number; steps: number; loss: number; tokensPerSec: number; loadCV: number; loads: { layer: number; tokensPerExpert: number[] }[] }
  | { type: 'trained'; id: number; info: ModelInfo; moeValLoss: number; denseValLoss: number | null; stopped: boolean }
  | { type: 'routing'; id: number; numExperts: number; layers: { layer: number; tokens: TokenRoute[] }[]; truncated: boolean }
  | { type: 'gen-piece'; id: number; text: string }
  | { type: 'gen-done'; id: number; text: string; tokensPerSec: number; note?: string }
  | { type: 'loaded'; id: number; info: ModelInfo }
  | { type: 'download'; id: number; bytes: ArrayBuffer; name: string }
  | { type: 'error'; id: number; message: string };

export type Envelope = Request & { id: number };
