/** Command line of `node dist/bench/run.js [suite...] [options]`. */

export interface BenchArgs {
  suites: string[];
  quick: boolean;
  threads: number[];
  backends: string[];
  peers: boolean;
  isolate: boolean;
  seed: number;
  outDir: string | null;
  list: boolean;
  help: boolean;
}

export const USAGE = `usage: node dist/bench/run.js [suite...] [options]   (npm run bench -- [suite...] [options])

  suite...            suites to run (default: all in bench/suites/)
  --quick             short smoke run (few reps, ~0.1 s per case)
  --threads 1,2       worker-thread counts for the wasm/native backends (default 1,2)
  --backends a,b      moe-ts backends: js, wasm, native (default all three)
  --no-peers          skip tfjs-wasm and jax-js
  --in-process        run every configuration in this process (no per-task timeout;
                      for debugging with full stack traces)
  --seed N            seed of the random inputs (default 1234)
  --out DIR           where <suite>.json goes (default bench/results)
  --list              list suites and exit
  -h, --help          this text`;

const KNOWN_BACKENDS = ['js', 'wasm', 'native'];

function parseIntList(flag: string, v: string): number[] {
  const parts = v.split(',').filter((s) => s !== '');
  const out = parts.map((s) => Number(s));
  if (out.length === 0 || out.some((n) => !Number.isInteger(n) || n < 1 || n > 256)) {
    throw new Error(`${flag}: expected comma-separated integers in 1..256, got "${v}"`);
  }
  return [...new Set(out)];
}

export function parseArgs(argv: readonly string[]): BenchArgs {
  const a: BenchArgs = {
    suites: [],
    quick: false,
    threads: [1, 2],
    backends: [...KNOWN_BACKENDS],
    peers: true,
    isolate: true,
    seed: 1234,
    outDir: null,
    list: false,
    help: false,
  };
  for (let i = 0; i < argv.length; i++) {
    let arg = argv[i];
    let inline: string | undefined;
    const eq = arg.indexOf('=');
    if (arg.startsWith('--') && eq > 0) {
      inline = arg.slice(eq + 1);
      arg = arg.slice(0, eq);
    }
    const value = (): string => {
      if (inline !== undefined) return inline;
      const v = argv[++i];
      if (v === undefined || v.startsWith('--')) throw new Error(`${arg}: missing value`);
      return v;
    };
    switch (arg) {
      case '--quick':
        a.quick = true;
        break;
      case '--threads':
        a.threads = parseIntList(arg, value());
        break;
      case '--backends': {
        const v = value();
        const names = [...new Set(v.split(',').filter((s) => s !== ''))];
        const bad = names.filter((n) => !KNOWN_BACKENDS.includes(n));
        if (names.length === 0 || bad.length > 0) throw new Error(`--backends: expected some of ${KNOWN_BACKENDS.join(', ')}, got "${v}"`);
        a.backends = names;
        break;
      }
      case '--no-peers':
        a.peers = false;
        break;
      case '--in-process':
        a.isolate = false;
        break;
      case '--seed': {
        const v = value();
        const n = Number(v);
        if (!Number.isInteger(n) || n < 0) throw new Error(`--seed: expected a non-negative integer, got "${v}"`);
        a.seed = n;
        break;
      }
      case '--out':
        a.outDir = value();
        break;
      case '--list':
        a.list = true;
        break;
      case '-h':
      case '--help':
        a.help = true;
        break;
      default:
        if (arg.startsWith('-')) throw new Error(`unknown option "${argv[i]}"\n${USAGE}`);
        a.suites.push(arg);
    }
  }
  return a;
}
