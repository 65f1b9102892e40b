/**
 * Synchronous access to onnxruntime-node's native binding. The package's public
 * `InferenceSession.run` only wraps the synchronous binding call in setImmediate, and the
 * kernel interface must stay synchronous, so we drive the binding directly.
 */
import { createRequire } from 'node:module';

/** The tensor shape the binding reads from feeds/fetches (a duck-typed onnxruntime-common Tensor). */
export interface OrtTensorLike {
  type: 'float32' | 'int64' | 'int32';
  data: Float32Array | BigInt64Array | Int32Array;
  dims: number[];
  location: 'cpu';
}

export interface BindingSession {
  loadModel(buffer: ArrayBufferLike, byteOffset: number, byteLength: number, options: object): void;
  run(feeds: Record<string, OrtTensorLike>, fetches: Record<string, OrtTensorLike | null>, options?: object): Record<string, { data: Float32Array; dims: number[] }>;
  dispose(): void;
  readonly inputMetadata: { name: string }[];
  readonly outputMetadata: { name: string }[];
}

export interface OrtBinding {
  InferenceSession: new () => BindingSession;
}

export interface SessionConfig {
  threads: number;
  /** Spin-wait in the intra-op pool between parallel sections (faster hand-off, burns CPU). */
  spinning: boolean;
}

let loaded: OrtBinding | null = null;

/** Loads (once) and initialises the native binding; throws a descriptive error if it can't. */
export function loadOrtBinding(): OrtBinding {
  if (loaded) return loaded;
  if (typeof process === 'undefined' || !process.versions?.node) {
    throw new Error('native backend: onnxruntime-node needs Node.js');
  }
  try {
    const require = createRequire(import.meta.url);
    const mod = require('onnxruntime-node/dist/binding.js') as { binding: OrtBinding; initOrt: () => void };
    mod.initOrt();
    if (typeof mod.binding?.InferenceSession !== 'function') throw new Error('binding has no InferenceSession');
    loaded = mod.binding;
    return loaded;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'MODULE_NOT_FOUND') {
      // an optional peer dependency: `npm install moe-ts` does not pull it (or its GPU downloads)
      throw new Error('native backend: onnxruntime-node is not installed (optional); run `ONNXRUNTIME_NODE_INSTALL=skip npm install onnxruntime-node` for the native CPU GEMM, or use --backend wasm', {
        cause: e,
      });
    }
    throw new Error(`native backend: cannot load onnxruntime-node (${process.platform}/${process.arch}): ${(e as Error).message}`, { cause: e });
  }
}

/** Creates a session synchronously from ONNX model bytes. */
export function createSession(binding: OrtBinding, model: Uint8Array, cfg: SessionConfig): BindingSession {
  const s = new binding.InferenceSession();
  s.loadModel(model.buffer, model.byteOffset, model.byteLength, {
    intraOpNumThreads: cfg.threads,
    interOpNumThreads: 1,
    graphOptimizationLevel: 'all',
    executionMode: 'sequential',
    // The arena would keep peak intermediate memory forever; our graphs write into caller buffers.
    enableCpuMemArena: false,
    // Shapes change every call (expert group sizes, sequence lengths); a memory pattern would be
    // re-planned for each new shape, which costs more than the small products themselves.
    enableMemPattern: false,
    extra: {
      session: {
        intra_op: { allow_spinning: cfg.spinning ? '1' : '0' },
        inter_op: { allow_spinning: '0' },
      },
    },
  });
  return s;
}

export function f32(data: Float32Array, dims: number[]): OrtTensorLike {
  return { type: 'float32', data, dims, location: 'cpu' };
}
