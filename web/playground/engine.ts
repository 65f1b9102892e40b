/**
 * The playground's engine: a dedicated Worker that owns the models and runs every computation
 * (training, routing, generation, checkpoint parsing), so the page never freezes. The wasm
 * kernels block in Atomics.wait, which is allowed here and not on the main thread.
 */
import {
  CheckpointError,
  TrainSession,
  firstInvalidUtf8,
  generate,
  inferenceModelFromCheckpoint,
  initBrowserBackend,
  browserThreadsAvailable,
  browserWasmUsesRelaxedSimd,
  checkpointFromBytes,
  matchedDenseConfig,
  noGrad,
  parseRunConfig,
  routerRegistry,
  Rng,
  type MoETransformerLM,
  type Tokenizer,
  type RunConfig,
} from '../../src/browser.js';
import type { Envelope, ModelInfo, Reply, TokenRoute, TrainSettings } from './protocol.js';

interface Scope {
  onmessage: ((e: { data: Envelope }) => void) | null;
  postMessage(msg: Reply, transfer?: ArrayBuffer[]): void;
}
const scope = globalThis as unknown as Scope;
const post = (r: Reply, transfer?: ArrayBuffer[]): void => scope.postMessage(r, transfer);

/** The model routing and generation use: the last trained MoE (with its session) or a loaded checkpoint. */
interface Current {
  model: MoETransformerLM;
  tokenizer: Tokenizer;
  config: RunConfig;
  info: ModelInfo;
  session: TrainSession | null;
}
let current: Current | null = null;
let dense: TrainSession | null = null;
let stopRequested = false;
let training = false;
let embedded: string | null = null;

const yieldToEvents = (): Promise<void> => new Promise((r) => setTimeout(r, 0));

function runConfig(s: TrainSettings, source: string): RunConfig {
  return parseRunConfig(
    {
      model: {
        hidden_size: s.hidden,
        num_hidden_layers: s.layers,
        num_attention_heads: Math.max(1, Math.floor(s.hidden / 16)),
        max_position_embeddings: Math.max(256, s.seqLen),
        num_local_experts: s.numExperts,
        num_experts_per_tok: s.topK,
        moe_intermediate_size: s.expertWidth,
        intermediate_size: s.expertWidth * s.topK,
        hidden_act: s.activation,
        router_type: s.router,
      },
      training: { steps: s.steps, lr: s.lr, batch_size: s.batchSize, seq_len: s.seqLen, seed: s.seed, warmup_steps: Math.min(20, Math.floor(s.steps / 10)), eval_batches: 2 },
      data: { sources: [source], tokenizer: { type: 'byte' } },
    },
    'playground settings',
  );
}

function infoOf(model: MoETransformerLM, config: RunConfig, source: string, step: number): ModelInfo {
  const m = config.model;
  return {
    source,
    step,
    params: model.numParameters(),
    activeParams: model.activeParameters(),
    numExperts: m.num_local_experts,
    topK: m.num_experts_per_tok,
    router: m.router_type,
    layers: m.num_hidden_layers,
  };
}

async function corpus(id: number): Promise<string> {
  if (embedded) return embedded;
  post({ type: 'progress', id, message: 'fetching the embedded Shakespeare corpus' });
  const res = await fetch(new URL('shakespeare.txt', import.meta.url));
  if (!res.ok) throw new Error(`fetching shakespeare.txt failed with HTTP ${res.status}`);
  const bytes = new Uint8Array(await res.arrayBuffer());
  const bad = firstInvalidUtf8(bytes);
  if (bad >= 0) throw new Error(`shakespeare.txt is not valid UTF-8 at byte ${bad}`);
  return (embedded = new TextDecoder().decode(bytes));
}

async function train(id: number, s: TrainSettings, text: string | null, textName: string): Promise<void> {
  if (training) throw new Error('training is already running; stop it first');
  // the embedded corpus keeps its domain name, so `moe-ts eval` on a downloaded checkpoint finds it
  const cfg = runConfig(s, text === null ? 'shakespeare' : 'playground');
  const src = text ?? (await corpus(id));
  if (src.length < 4 * (cfg.training.seq_len + 1))
    throw new Error(`the text is too short: ${src.length} characters, need at least ${4 * (cfg.training.seq_len + 1)} for sequences of ${cfg.training.seq_len}`);
  post({ type: 'progress', id, message: 'building the models' });
  await yieldToEvents();
  const moe = new TrainSession(cfg, [src]);
  dense = s.dense ? new TrainSession({ ...cfg, model: matchedDenseConfig(cfg.model) }, [src], moe.tokenizer) : null;
  const name = text === null ? 'shakespeare' : textName;
  current = { model: moe.model, tokenizer: moe.tokenizer, config: moe.config, info: infoOf(moe.model, moe.config, `trained in this tab on ${name}`, 0), session: moe };
  if (dense) current.info.denseParams = dense.model.numParameters();
  training = true;
  stopRequested = false;
  try {
    for (let i = 0; i < cfg.training.steps && !stopRequested; i++) {
      const m = moe.trainStep();
      post({ type: 'step', which: 'moe', step: m.step, steps: cfg.training.steps, loss: m.loss, tokensPerSec: m.tokensPerSec, loadCV: m.loadCV, loads: moe.lastLoads });
      if (dense) {
        const d = dense.trainStep();
        post({ type: 'step', which: 'dense', step: d.step, steps: cfg.training.steps, loss: d.loss, tokensPerSec: d.tokensPerSec, loadCV: 0, loads: [] });
      }
      current.info.step = moe.step;
      await yieldToEvents();
    }
    post({ type: 'progress', id, message: 'validating' });
    await yieldToEvents();
    const moeVal = moe.evaluate().loss;
    const denseVal = dense ? dense.evaluate().loss : null;
    post({ type: 'trained', id, info: current.info, moeValLoss: moeVal, denseValLoss: denseVal, stopped: stopRequested });
  } finally {
    training = false;
  }
}

function need(): Current {
  if (!current) throw new Error('no model yet: train one or load a checkpoint first');
  return current;
}

function route(id: number, text: string): void {
  const c = need();
  const ids = c.tokenizer.encode(text);
  if (ids.length === 0) throw new Error('type some text to route');
  const max = c.config.model.max_position_embeddings;
  const used = ids.length > max ? ids.slice(0, max) : ids;
  const E = c.config.model.num_local_experts;
  if (E === 0) throw new Error('this model is dense (num_local_experts 0): it has no router to show');
  const wasTraining = c.model.training;
  c.model.eval();
  try {
    const layers = noGrad(() => {
      const res = c.model.forward(Int32Array.from(used), 1, used.length, { ctx: { training: false, step: 0, rng: new Rng(0) } });
      return res.aux.map(({ layer, aux }) => {
        const probs = aux.router.probs.data;
        const tokens: TokenRoute[] = Array.from(used, (tid, t) => ({
          text: new TextDecoder().decode(c.tokenizer.tokenBytes(tid)),
          experts: [],
          weights: [],
          probs: Array.from(probs.subarray(t * E, (t + 1) * E)),
        }));
        const r = aux.router.routing;
        if (r.kind === 'sparse') {
          const w = r.weights.data;
          for (let a = 0; a < r.tokenIdx.length; a++) {
            const tk = tokens[r.tokenIdx[a]];
            tk.experts.push(r.expertIdx[a]);
            tk.weights.push(w[a]);
          }
        } else {
          // soft routing: show each token's heaviest experts by probability
          for (const tk of tokens)
            tk.experts = tk.probs
              .map((p, e) => [p, e])
              .sort((x, y) => y[0] - x[0])
              .slice(0, c.config.model.num_experts_per_tok)
              .map(([, e]) => e);
        }
        for (const tk of tokens) {
          const order = tk.experts.map((e, i) => [tk.weights[i] ?? tk.probs[e], e]).sort((x, y) => y[0] - x[0]);
          tk.experts = order.map(([, e]) => e);
          tk.weights = order.map(([w]) => w);
        }
        return { layer, tokens };
      });
    });
    post({ type: 'routing', id, numExperts: E, layers, truncated: used.length < ids.length });
  } finally {
    c.model.train(wasTraining);
  }
}

function gen(id: number, r: Extract<Envelope, { type: 'generate' }>): void {
  const c = need();
  let model = c.model;
  if (r.which === 'dense') {
    if (!dense) throw new Error('no dense model: train with "dense side by side" on');
    model = dense.model;
  }
  const res = generate(model, c.tokenizer, r.prompt, {
    maxNewTokens: r.maxNewTokens,
    temperature: r.temperature,
    topP: r.topP,
    seed: r.seed,
    onText: (text) => post({ type: 'gen-piece', id, text }),
  });
  post({ type: 'gen-done', id, text: res.text, tokensPerSec: res.tokensPerSec, ...(res.note ? { note: res.note } : {}) });
}

/**
 * Which files make the checkpoint: a single-file checkpoint (.safetensors with the trainer state
 * in its metadata), or a CLI checkpoint directory's model.safetensors + state.json (from a
 * dropped run directory, the newest step, or the one latest.json names).
 */
function pickCheckpoint(files: { path: string; bytes: Uint8Array }[]): { model: { path: string; bytes: Uint8Array }; state?: Uint8Array } {
  const by = new Map(files.map((f) => [f.path.replace(/^\/+/, ''), f]));
  const dirOf = (p: string): string => (p.includes('/') ? p.slice(0, p.lastIndexOf('/') + 1) : '');
  const latest = [...by.values()].find((f) => f.path.endsWith('latest.json'));
  let dirs = [...by.keys()].filter((p) => p.endsWith('model.safetensors')).map(dirOf);
  if (latest) {
    try {
      const rel = (JSON.parse(new TextDecoder().decode(latest.bytes)) as { checkpoint?: unknown }).checkpoint;
      if (typeof rel === 'string') dirs = dirs.filter((d) => d.replace(/\/$/, '').endsWith(rel));
    } catch {
      // an unreadable latest.json: fall back to the newest step below
    }
  }
  dirs.sort();
  for (let i = dirs.length - 1; i >= 0; i--) {
    const state = by.get(`${dirs[i]}state.json`);
    const model = by.get(`${dirs[i]}model.safetensors`)!;
    if (state) return { model, state: state.bytes };
  }
  const st = files.filter((f) => f.path.endsWith('.safetensors'));
  if (st.length === 1) return { model: st[0] };
  if (st.length === 0) {
    const names = files
      .map((f) => f.path)
      .slice(0, 5)
      .join(', ');
    throw new CheckpointError(
      `${names}${files.length > 5 ? ', ...' : ''}: not a moe-ts checkpoint; drop a .safetensors checkpoint downloaded from here, or a CLI checkpoint's model.safetensors together with its state.json (or the whole run directory)`,
    );
  }
  throw new CheckpointError(`${st.length} .safetensors files but no state.json next to them; drop one checkpoint directory or one single-file checkpoint`);
}

function load(id: number, files: { path: string; bytes: ArrayBuffer }[]): void {
  if (training) throw new Error('stop training before loading a checkpoint');
  const list = files.map((f) => ({ path: f.path, bytes: new Uint8Array(f.bytes) }));
  const pick = pickCheckpoint(list);
  post({ type: 'progress', id, message: `reading ${pick.model.path}` });
  const ck = checkpointFromBytes(pick.model.bytes, pick.state, pick.model.path);
  const m = inferenceModelFromCheckpoint(ck, pick.model.path);
  dense = null;
  current = { model: m.model, tokenizer: m.tokenizer, config: m.config, info: infoOf(m.model, m.config, `loaded from ${pick.model.path}`, m.step), session: null };
  post({ type: 'loaded', id, info: current.info });
}

function download(id: number): void {
  const c = need();
  if (!c.session) throw new Error('this model was loaded from a checkpoint, not trained here; there is nothing new to download');
  const bytes = c.session.checkpointBytes();
  const buf = bytes.buffer.byteLength === bytes.byteLength ? (bytes.buffer as ArrayBuffer) : (bytes.slice().buffer as ArrayBuffer);
  post({ type: 'download', id, bytes: buf, name: `moe-ts-playground-step-${c.session.step}.safetensors` }, [buf]);
}

async function handle(msg: Envelope): Promise<void> {
  switch (msg.type) {
    case 'init': {
      const be = await initBrowserBackend(msg.backend ?? 'auto', msg.threads !== undefined ? { threads: msg.threads } : {});
      const relaxed = be.name === 'wasm' ? await browserWasmUsesRelaxedSimd() : false;
      post({ type: 'ready', backend: be.name, threads: be.threads, isolated: browserThreadsAvailable(), relaxed, routers: routerRegistry.describe() });
      return;
    }
    case 'train':
      return train(msg.id, msg.settings, msg.text, msg.textName);
    case 'stop':
      stopRequested = true;
      return;
    case 'route':
      return route(msg.id, msg.text);
    case 'generate':
      return gen(msg.id, msg);
    case 'load':
      return load(msg.id, msg.files);
    case 'download':
      return download(msg.id);
  }
}

scope.onmessage = (e) => {
  const msg = e.data;
  handle(msg).catch((err: unknown) => post({ type: 'error', id: msg.id, message: err instanceof Error ? err.message : String(err) }));
};
