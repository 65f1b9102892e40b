#!/usr/bin/env node
/** The moe-ts command line: train, generate, chat, eval, convert, report, bench-routers, routers, data. */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Command, InvalidArgumentError, Option } from 'commander';
import { initBackend, disposeBackend } from '../kernels/index.js';
import { parseRunConfig, parseRunConfigText, matchedDenseConfig, ConfigError, type RunConfig } from '../models/config.js';
import { asTransformer } from '../models/transformer.js';
import { train, TrainingInterruptedError } from '../train/trainer.js';
import { resumeConfig } from '../train/run-dir.js';
import { readRegularTextFileSync, FILE_LIMITS } from '../data/files.js';
import { createProgress } from './progress.js';

function intArg(name: string, min = 1, max = Number.MAX_SAFE_INTEGER) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) throw new InvalidArgumentError(`${name} must be an integer >= ${min}, got "${v}"`);
    if (n > max) throw new InvalidArgumentError(`${name} must be at most ${max}, got "${v}"`);
    return n;
  };
}

function floatArg(name: string, check: (x: number) => boolean, rule: string) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isFinite(n) || !check(n)) throw new InvalidArgumentError(`${name} must be ${rule}, got "${v}"`);
    return n;
  };
}

function readConfig(file: string | undefined): RunConfig {
  if (!file) return parseRunConfig({});
  return parseRunConfigText(readConfigText(file), file);
}

/** A config file's text: regular files only, bounded size (a FIFO or /dev/zero is refused, not read). */
function readConfigText(file: string): string {
  if (!fs.existsSync(file)) throw new ConfigError(`cannot read config ${file}: ENOENT`);
  try {
    return readRegularTextFileSync(file, { what: 'config', maxBytes: FILE_LIMITS.config });
  } catch (e) {
    throw new ConfigError((e as Error).message);
  }
}

/** A model and tokenizer from --ckpt (moe-ts checkpoint) or --model (Hugging Face directory). */
/** A --model path that is a Hugging Face model directory (not a .gguf file, not a moe-ts run or checkpoint directory). */
function isHfModelDir(p: string): boolean {
  return fs.existsSync(p) && fs.statSync(p).isDirectory() && !fs.existsSync(path.join(p, 'latest.json')) && !fs.existsSync(path.join(p, 'state.json'));
}

async function loadForCommand<M>(o: { ckpt?: string; model?: string }, fromCkpt: (p: string) => M): Promise<M> {
  const p = modelPath(o);
  if (!o.model || !isHfModelDir(p)) return fromCkpt(p);
  const { fromPretrainedWithTokenizer } = await import('../io/hf/pretrained.js');
  return fromPretrainedWithTokenizer(o.model) as unknown as M;
}

/** --model or --ckpt (one of them, naming the same kind of path). */
function modelPath(o: { ckpt?: string; model?: string }): string {
  if (o.ckpt && o.model) throw new ConfigError('give --model or --ckpt, not both');
  const p = o.model ?? o.ckpt;
  if (!p) throw new ConfigError('--model <path> (or --ckpt <dir>) is required');
  return p;
}

/** A byte size such as 1GB, 512MB, 1.5G, 800k or a plain number of bytes (decimal units). */
export function parseBytes(name: string, v: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$/i.exec(v);
  if (!m) throw new ConfigError(`${name} must be a size such as 1GB, 512MB or 800000000, got "${v}"`);
  const unit = { '': 1, k: 1e3, m: 1e6, g: 1e9, t: 1e12 }[m[2].toLowerCase() as '' | 'k' | 'm' | 'g' | 't'];
  const bin = m[3].toLowerCase().startsWith('i') ? { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 }[m[2].toLowerCase() as '' | 'k' | 'm' | 'g' | 't'] : unit;
  const n = Number(m[1]) * bin;
  if (!(n > 0)) throw new ConfigError(`${name} must be positive, got "${v}"`);
  return n;
}

function timestamp(): string {
  return new Date().toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
}

const backendOption = () => new Option('--backend <name>', 'kernel backend: auto, native, wasm, js').default(process.env.MOE_BACKEND ?? 'auto');
/** Same bound for every backend (the wasm backend's limit): more threads than this only thrash. */
const MAX_THREADS = 256;
const threadsOption = () => new Option('--threads <n>', `worker threads for the kernels (1-${MAX_THREADS})`).argParser(intArg('--threads', 1, MAX_THREADS));
// sampling flags shared by generate and chat
const temperatureOption = () => new Option('--temperature <t>', 'sampling temperature (0 = greedy)').argParser(floatArg('--temperature', (x) => x >= 0, '>= 0')).default(0.8);
const topKOption = () => new Option('--top-k <k>', 'sample among the k most likely tokens (0 = off)').argParser(intArg('--top-k', 0)).default(0);
const topPOption = () => new Option('--top-p <p>', 'nucleus sampling mass').argParser(floatArg('--top-p', (x) => x > 0 && x <= 1, 'in (0, 1]')).default(1);
// expert steering flags shared by generate and eval (Mixture of Tunable Experts, 2025)
const forceExpertOption = () => new Option('--force-expert <L:E...>', 'always route to expert E in MoE layer L (every token; several allowed; L:E1,E2 for more)');
const forbidExpertOption = () => new Option('--forbid-expert <L:E...>', 'never route to expert E in MoE layer L (its logit masked to -inf before top-k; several allowed)');
async function expertOverridesOf(o: { forceExpert?: string[]; forbidExpert?: string[] }) {
  const { parseExpertSpecs } = await import('../moe/override.js');
  return parseExpertSpecs(o.forceExpert ?? [], o.forbidExpert ?? []);
}
/** --contrast beta[,alpha]: SCMoE's strength and plausibility threshold. */
function contrastArg(v: string): { beta: number; alpha?: number } {
  const parts = v.split(',');
  const beta = Number(parts[0]);
  const alpha = parts[1] === undefined ? undefined : Number(parts[1]);
  if (parts.length > 2 || !Number.isFinite(beta) || beta < 0) throw new InvalidArgumentError(`--contrast must be beta[,alpha] with beta >= 0 (e.g. 0.5 or 0.5,0.1), got "${v}"`);
  if (alpha !== undefined && !(alpha >= 0 && alpha < 1)) throw new InvalidArgumentError(`--contrast alpha must be in [0, 1), got "${v}"`);
  return { beta, ...(alpha !== undefined ? { alpha } : {}) };
}
const allowNonFiniteOption = () => new Option('--allow-non-finite', 'load a checkpoint whose weights hold NaN or infinity (to debug a diverged run)');

/** A --config file as raw JSON (for --resume, where only the fields it names override the run's). */
function readConfigJson(file: string): Record<string, unknown> {
  const text = readConfigText(file);
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new ConfigError(`config ${file} is not valid JSON: ${(e as Error).message}`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new ConfigError(`invalid config ${file}: (root): expected an object`);
  return v as Record<string, unknown>;
}

async function withBackend<T>(o: { backend: string; threads?: number }, fn: (name: string) => Promise<T>): Promise<T> {
  const b = await initBackend(o.backend, { threads: o.threads });
  try {
    return await fn(`${b.name} (${b.threads} thread${b.threads === 1 ? '' : 's'})`);
  } finally {
    disposeBackend();
  }
}

export function buildProgram(): Command {
  const program = new Command();
  program
    .name('moe-ts')
    .description('Mixture-of-Experts language models in TypeScript')
    .configureOutput({
      outputError: (str, write) => write(str),
    });

  program
    .command('train')
    .description('train an MoE language model (default: a small MoE on the embedded Shakespeare corpus)')
    .option('--config <file>', 'JSON config with "model", "training" and "data" sections')
    .option('--data <sources...>', 'corpora: shakespeare, wikitext, linux (see `moe-ts data`), or paths of text files or folders')
    .option('--steps <n>', 'training steps', intArg('--steps'))
    .option('--out <dir>', 'run directory (checkpoints, log.jsonl, results.json)')
    .option('--resume', "continue the run in --out from its latest checkpoint, with the run's own config; flags given override it (printed)")
    .option('--overwrite', 'replace the run already in --out (its checkpoints, log and results)')
    .option('--dense', 'train the FLOP-matched dense baseline of the config instead')
    .option('--seed <n>', 'random seed', intArg('--seed', 0))
    .option('--quiet', 'no progress output')
    .addOption(backendOption())
    .addOption(threadsOption())
    .addOption(new Option('--peft <type>', 'parameter-efficient fine-tuning of --model: lora-experts (the base stays frozen; writes <out>/adapters.safetensors)').choices(['lora-experts']))
    .option('--lora-experts <n>', 'peft: routed LoRA experts per targeted layer (default 4; 0 with --lora-shared: shared adapters only)', intArg('--lora-experts', 0))
    .option('--lora-top-k <k>', 'peft: experts mixed per token (default: all, soft gates)', intArg('--lora-top-k'))
    .option('--lora-rank <r>', 'peft: rank of each adapter (default 8)', intArg('--lora-rank'))
    .option(
      '--lora-alpha <a>',
      'peft: adapter scale alpha (output times alpha/rank; default 16)',
      floatArg('--lora-alpha', (x) => x > 0, '> 0'),
    )
    .option('--lora-shared <n>', 'peft: always-on shared adapters (PERFT shared; default 0)', intArg('--lora-shared', 0))
    .option('--lora-experts-per-layer <list>', 'peft: comma-separated routed experts per decoder layer (MoLA), e.g. 0,2,4,8')
    .option('--lora-targets <list>', 'peft: comma-separated linear layers: q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj (default q_proj,v_proj,o_proj)')
    .option('--model <dir>', 'fine-tune a Hugging Face model directory or a moe-ts run/checkpoint (e.g. from `moe-ts upcycle`); its config replaces the "model" section')
    .option(
      '--router-tuning',
      "Router-Tuning: train only Mixture-of-Depths routers on the frozen --model; depth routing from --model, else the config's model.mixture_of_depths, else capacity 0.5 on every layer, attention skipped, TanhNorm weights (docs/depth.md)",
    )
    .option(
      '--gamma-mod',
      "γ-MoD: turn the lowest-ARank layers of --model into Mixture-of-Depths layers with a shared router, then train (depth fields from the config's model.mixture_of_depths, else capacity 0.5; docs/depth.md)",
    )
    .option('--arank-layers <n>', 'gamma-mod: layers to convert (default: --arank-fraction of them)', intArg('--arank-layers'))
    .option(
      '--arank-fraction <f>',
      'gamma-mod: fraction of the layers to convert (default 0.5)',
      floatArg('--arank-fraction', (x) => x > 0 && x <= 1, 'in (0, 1]'),
    )
    .option('--arank-samples <n>', 'gamma-mod: calibration sequences from the training corpora (default 8)', intArg('--arank-samples'))
    .option('--arank-seq-len <n>', "gamma-mod: tokens per calibration sequence (default min(128, the model's positions))", intArg('--arank-seq-len', 2))
    .option(
      '--arank-tolerance <t>',
      'gamma-mod: relative singular-value tolerance of the attention-map rank (default 0.001)',
      floatArg('--arank-tolerance', (x) => x > 0 && x < 1, 'in (0, 1)'),
    )
    .action(async (o) => {
      if (o.resume && !o.out) throw new ConfigError('--resume needs --out <dir> naming the run to continue');
      if (o.resume && o.overwrite) throw new ConfigError('--resume continues the run in --out and --overwrite replaces it: choose one');
      let cfg: RunConfig;
      let overrides: string[] = [];
      let init: { model: import('../models/family.js').LanguageModel; tokenizer: import('../data/tokenizer/index.js').Tokenizer } | undefined;
      let gammaReport: import('../train/gamma-mod.js').GammaModReport | undefined;
      const arankFlag = ['arankLayers', 'arankFraction', 'arankSamples', 'arankSeqLen', 'arankTolerance'].find((k) => o[k] !== undefined);
      if (arankFlag && !o.gammaMod) throw new ConfigError(`--${arankFlag.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase())} applies only with --gamma-mod`);
      if (o.gammaMod && !o.model) throw new ConfigError('--gamma-mod needs --model <base> (the trained model whose lowest-ARank layers are converted)');
      if (o.resume && o.model) throw new ConfigError('--resume continues the run in --out with its own weights; --model starts a new fine-tuning run: choose one');
      if (o.resume) {
        const r = resumeConfig(o.out, {
          configJson: o.config ? readConfigJson(o.config) : undefined,
          configPath: o.config,
          steps: o.steps,
          data: o.data,
          seed: o.seed,
          dense: o.dense ? matchedDenseConfig : undefined,
        });
        cfg = r.config;
        overrides = r.overrides;
      } else {
        cfg = readConfig(o.config);
        const fileDepth = cfg.model.mixture_of_depths;
        if (o.model) {
          if (o.dense) throw new ConfigError('--dense and --model cannot be combined (the loaded model fixes the architecture)');
          // a Hugging Face directory, or a moe-ts run/checkpoint (e.g. made by `moe-ts upcycle`): new run, its weights
          const { loadModelForInference } = await import('../infer/generate.js');
          const p = await loadForCommand(o, (q) => {
            const m = loadModelForInference(q);
            return { model: m.model, tokenizer: m.tokenizer, config: m.config.model };
          });
          init = { model: p.model, tokenizer: p.tokenizer };
          // a window longer than the model's positions cannot train
          cfg = { ...cfg, model: p.config, training: { ...cfg.training, seq_len: Math.min(cfg.training.seq_len, p.config.max_position_embeddings) } };
        }
        if (o.gammaMod) {
          if (!o.model || !init) throw new ConfigError('--gamma-mod needs --model <base> (the trained model whose lowest-ARank layers are converted)');
          if (o.peft) throw new ConfigError('--gamma-mod and --peft cannot be combined');
          const { gammaModConversion } = await import('../train/gamma-mod.js');
          const data = o.data ? { ...cfg, data: { ...cfg.data, sources: o.data } } : cfg;
          const conv = gammaModConversion(
            init.model,
            init.tokenizer,
            data,
            { layers: o.arankLayers, fraction: o.arankFraction, samples: o.arankSamples, seqLen: o.arankSeqLen, tolerance: o.arankTolerance, seed: o.seed },
            fileDepth as Record<string, unknown> | undefined,
          );
          gammaReport = conv.report;
          if (!o.quiet)
            process.stderr.write(
              `gamma-mod: ARank (tolerance ${conv.report.tolerance}, ${conv.report.samples} x ${conv.report.seqLen} tokens) ${conv.report.arank.map((r) => `layer ${r.layer} ${r.arank.toFixed(2)}`).join(', ')}; converting layers ${conv.report.layers.join(', ')}\n`,
            );
          cfg = { ...cfg, model: { ...cfg.model, mixture_of_depths: conv.depth } as RunConfig['model'] };
        }
        if (o.routerTuning) {
          if (!o.model) throw new ConfigError('--router-tuning needs --model <base> (the frozen model whose depth routers are trained)');
          if (o.peft) throw new ConfigError('--router-tuning and --peft cannot be combined: each trains its own small part of a frozen base');
          const depth = cfg.model.mixture_of_depths ?? fileDepth ?? { capacity: 0.5, every: 1, skip: 'attention', weight: 'tanh' };
          cfg = { ...cfg, model: { ...cfg.model, mixture_of_depths: { ...depth, router_tuning: true } } as RunConfig['model'] };
        }
        if (o.peft) {
          if (!o.model) throw new ConfigError('--peft needs --model <base> (the frozen model the adapters are trained on)');
          const list = (v: string | undefined, f: (x: string) => unknown) => (v === undefined ? undefined : v.split(',').map((x) => f(x.trim())));
          const peft = {
            type: o.peft,
            ...(o.loraExperts !== undefined ? { experts: o.loraExperts } : {}),
            ...(o.loraTopK !== undefined ? { top_k: o.loraTopK } : {}),
            ...(o.loraRank !== undefined ? { rank: o.loraRank } : {}),
            ...(o.loraAlpha !== undefined ? { alpha: o.loraAlpha } : {}),
            ...(o.loraShared !== undefined ? { shared: o.loraShared } : {}),
            ...(o.loraExpertsPerLayer !== undefined
              ? {
                  experts_per_layer: list(o.loraExpertsPerLayer, (x) => {
                    if (!/^\d+$/.test(x)) throw new ConfigError(`--lora-experts-per-layer must be comma-separated integers >= 0, got "${x}"`);
                    return Number(x);
                  }),
                }
              : {}),
            ...(o.loraTargets !== undefined ? { targets: list(o.loraTargets, String) } : {}),
          };
          cfg = { ...cfg, model: { ...cfg.model, peft } as RunConfig['model'] };
        }
        if (o.data) cfg = { ...cfg, data: { ...cfg.data, sources: o.data, weights: undefined } };
        if (o.steps) cfg = { ...cfg, training: { ...cfg.training, steps: o.steps } };
        if (o.seed !== undefined) cfg = { ...cfg, training: { ...cfg.training, seed: o.seed } };
        if (o.dense) cfg = { ...cfg, model: matchedDenseConfig(cfg.model) };
        cfg = parseRunConfig(cfg);
      }
      const out: string = o.out ?? `runs/train-${timestamp()}`;
      const progress = createProgress(process.stderr, Boolean(o.quiet));
      // Ctrl-C / SIGTERM: finish the current step, save a checkpoint, say how to resume; a second one exits at once
      const ac = new AbortController();
      const onSignal = (sig: NodeJS.Signals): void => {
        if (ac.signal.aborted) {
          process.stderr.write(`\nmoe-ts: ${sig} again: exiting without saving; ${out}/latest.json still names the last complete checkpoint\n`);
          process.exit(130);
        }
        process.stderr.write(`\nmoe-ts: ${sig}: saving a checkpoint after this step (again to exit at once)\n`);
        ac.abort();
      };
      process.on('SIGINT', onSignal);
      process.on('SIGTERM', onSignal);
      try {
        await withBackend(o, async (backend) => {
          const res = await train({
            config: cfg,
            outDir: out,
            resume: Boolean(o.resume),
            overwrite: Boolean(o.overwrite),
            ...(init ? { init } : {}),
            ...(gammaReport ? { report: { gamma_mod: gammaReport } } : {}),
            signal: ac.signal,
            events: {
              onStart: (i) => {
                progress.message(
                  `moe-ts train: ${i.params.toLocaleString()} params (${i.activeParams.toLocaleString()} active per token), tokenizer ${i.tokenizer}, data ${i.domains.join(' + ')}, backend ${backend}, out ${out}${i.startStep ? `, resuming at step ${i.startStep} of ${i.totalSteps}` : ''}`,
                );
                for (const line of overrides) progress.message(`  override ${line}`);
                progress.start(i.totalSteps, i.startStep);
              },
              onStep: (m) => progress.step(m),
              onEval: (r) => progress.eval(r),
            },
          });
          progress.stop();
          const f = res.finalEval;
          if (res.model.config.peft) {
            const { saveAdapters, ADAPTERS_FILE, writePeftTable } = await import('../adapt/peft.js');
            const adapted = asTransformer(res.model, 'adapt', 'train --peft');
            const n = saveAdapters(adapted, path.join(out, ADAPTERS_FILE));
            process.stdout.write(`adapters: ${n} tensors in ${path.join(out, ADAPTERS_FILE)} (base ${o.model} unchanged; moe-ts peft attach/merge)\n`);
            const { formatAdaptTable, ADAPT_DOMAINS } = await import('../adapt/common.js');
            // the embedded corpora (what the base knew) plus this run's training sources (the new domain)
            const sources = [...new Set([...ADAPT_DOMAINS, ...cfg.data.sources])];
            const r = writePeftTable({ base: o.model!, model: adapted, out, sources });
            if (!o.quiet) process.stdout.write(formatAdaptTable(r));
            process.stdout.write(`table: ${r.files.md}, ${r.files.json}\n`);
          }
          process.stdout.write(`done: ${res.steps} steps, val loss ${f.loss.toFixed(4)} (ppl ${f.perplexity.toFixed(2)}), ${Math.round(res.tokensPerSec)} tokens/s; results in ${out}\n`);
          if (res.steps === cfg.training.steps) {
            // issue 10: the run's loss next to a model of token frequencies alone; too close to it is a smoke run
            const { runBaseline, baselineLine, recordBaseline } = await import('./train-baseline.js');
            const b = runBaseline(cfg, res.tokenizer, f.loss);
            recordBaseline(out, b);
            process.stdout.write(baselineLine(b));
          }
        });
      } catch (e) {
        progress.stop();
        throw e;
      } finally {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
      }
    });

  program
    .command('generate')
    .description('sample text from a trained checkpoint or a model (Hugging Face directory, GGUF file)')
    .option('--ckpt <dir>', 'run directory or checkpoint directory')
    .option('--model <path>', 'a model: a Hugging Face model directory, a moe-ts run/checkpoint directory or a .gguf file (recognised by its contents)')
    .option('--prompt <text>', 'prompt text', '\n')
    .option('--max-tokens <n>', 'tokens to generate', intArg('--max-tokens'), 200)
    .addOption(temperatureOption())
    .addOption(topKOption())
    .addOption(topPOption())
    .option('--seed <n>', 'sampling seed', intArg('--seed', 0), 0)
    .addOption(allowNonFiniteOption())
    .option('--show-routing', 'after the text, show which experts each token used in each MoE layer (coloured on a terminal)')
    .option('--json', 'print one JSON object (text, token ids, and with --show-routing the routing per token) instead of streaming text')
    .option('--engine <e>', 'auto (fast decode path where the model is supported), fast, or eager (the reference forward)', 'auto')
    .option('--quant <q>', 'weight format of the fast path: f32, q8_0 or q4_0 (ggml blocks; activations quantised per block)', 'f32')
    .option(
      '--max-memory <size>',
      'memory budget (e.g. 1GB) for weights + KV cache + an LRU expert cache; experts beyond it stay in the GGUF file or safetensors shards of --model, read on demand with prefetch',
    )
    .option('--no-prefetch', "with --max-memory: no Pre-gated prefetch of the next layer's experts")
    .option(
      '--skip-threshold <t>',
      "AdapMoE: drop a token's 2nd..kth expert when its renormalised weight is below t (0 = off)",
      floatArg('--skip-threshold', (x) => x >= 0 && x < 1, 'in [0, 1)'),
      0,
    )
    .option(
      '--capacity-factor <c>',
      'capacity-aware token dropping in the prompt batch: at most ceil(c * tokens * k / experts) per expert (0 = off)',
      floatArg('--capacity-factor', (x) => x >= 0, '>= 0'),
      0,
    )
    .addOption(forceExpertOption())
    .addOption(forbidExpertOption())
    .option(
      '--contrast <beta[,alpha]>',
      'self-contrast decoding (SCMoE): (1+beta)·strong − beta·weak logits, weak = each token through its rank-k expert only; alpha: plausibility threshold (default 0.1)',
      contrastArg,
    )
    .option('--contrast-rank <r>', "rank of the weak pass's single expert (default: top-k's k, 2 for top-1 models)", intArg('--contrast-rank'))
    .addOption(backendOption())
    .addOption(threadsOption())
    .action(async (o) => {
      const { loadModelForInference, generate } = await import('../infer/index.js');
      const experts = await expertOverridesOf(o);
      if (o.contrastRank !== undefined && !o.contrast) throw new ConfigError('--contrast-rank needs --contrast');
      const { QUANT_FORMATS } = await import('../kernels/quant.js');
      if (!['auto', 'fast', 'eager'].includes(o.engine)) throw new Error(`--engine must be auto, fast or eager, got "${o.engine}"`);
      if (!(QUANT_FORMATS as readonly string[]).includes(o.quant)) throw new Error(`--quant must be one of ${QUANT_FORMATS.join(', ')}, got "${o.quant}"`);
      if (o.quant !== 'f32' && o.engine === 'eager') throw new Error('--quant needs the fast engine (--engine auto or fast)');
      // the fast path's products run on wasm SIMD unless the js backend was asked for
      const kernels = o.backend === 'js' ? undefined : new (await import('../kernels/wasm/quant.js')).WasmQuantKernels();
      const maxMemory = o.maxMemory !== undefined ? parseBytes('--max-memory', o.maxMemory) : undefined;
      const routingFlags = o.skipThreshold > 0 || o.capacityFactor > 0;
      if ((maxMemory !== undefined || routingFlags) && o.engine === 'eager') throw new Error('--max-memory, --skip-threshold and --capacity-factor need the fast engine (--engine auto or fast)');
      await withBackend(o, async () => {
        let offloaded: import('../infer/offload.js').GGUFEngine | import('../infer/offload.js').HfEngine | null = null;
        const { isGGUFFile } = await import('../io/gguf/index.js');
        if (maxMemory !== undefined) {
          const fs = await import('node:fs');
          const hfDir = Boolean(o.model) && fs.existsSync(`${o.model}/config.json`);
          if (!o.model || (!isGGUFFile(o.model) && !hfDir)) throw new Error('--max-memory needs --model <file.gguf> or a Hugging Face directory (experts are read from the file or its shards)');
          if (o.contrast) throw new Error('--contrast is not supported with --max-memory (its weak pass would need a second offloaded engine)');
          const { openGGUFEngine, openHfEngine } = await import('../infer/offload.js');
          const oo = { maxMemory, prefetch: o.prefetch !== false, skipThreshold: o.skipThreshold, capacityFactor: o.capacityFactor, ...(kernels ? { kernels } : {}) };
          // the expert cache sizes its slots up front: entropy-coded tq_e has no fixed size per expert
          if (o.quant === 'tq_e') throw new Error('--quant tq_e is not supported with --max-memory (its size per expert depends on the weights); use f32, q8_0, q4_0, q3_m or q2_m');
          if (hfDir) offloaded = openHfEngine(o.model, { ...oo, quant: o.quant });
          else {
            if (o.quant !== 'f32') throw new Error("--max-memory on a GGUF file uses the file's own blocks; drop --quant (quantise the file with convert/quantize or synth --quant)");
            offloaded = openGGUFEngine(o.model, oo);
          }
        }
        const { model, tokenizer } = offloaded ?? (await loadForCommand(o, (p) => loadModelForInference(p, { allowNonFinite: Boolean(o.allowNonFinite) })));
        let engine: 'auto' | 'fast' | 'eager' | import('../infer/decode.js').DecodeEngine = offloaded ? offloaded.engine : o.engine;
        if (!offloaded && routingFlags) {
          const { DecodeEngine } = await import('../infer/decode.js');
          engine = new DecodeEngine(model as import('../models/transformer.js').MoETransformerLM, {
            quant: o.quant,
            skipThreshold: o.skipThreshold,
            capacityFactor: o.capacityFactor,
            ...(kernels ? { kernels } : {}),
          });
        }
        if (!o.json) process.stdout.write(o.prompt);
        const r = generate(model, tokenizer, o.prompt, {
          maxNewTokens: o.maxTokens,
          temperature: o.temperature,
          topK: o.topK,
          topP: o.topP,
          seed: o.seed,
          // as transformers: the tokenizer's post-processor (e.g. <s>) on the prompt, stop at its eos / generation_config ids
          addSpecialTokens: true,
          ...(tokenizer.special ? { stopTokenIds: tokenizer.special.stopIds } : {}),
          traceRouting: Boolean(o.showRouting),
          ...(experts.length ? { experts } : {}),
          ...(o.contrast ? { contrast: { ...o.contrast, ...(o.contrastRank !== undefined ? { weakRank: o.contrastRank } : {}) } } : {}),
          engine,
          quant: o.quant,
          ...(kernels ? { kernels } : {}),
          onText: o.json ? undefined : (s: string) => process.stdout.write(s),
        });
        if (o.json) {
          const { routing, ...rest } = r;
          process.stdout.write(JSON.stringify({ prompt: o.prompt, ...rest, ids: Array.from(r.ids), ...(routing ? { routing } : {}) }) + '\n');
          return;
        }
        process.stdout.write(`\n`);
        if (r.routing) {
          const { formatRouting, useColor } = await import('./routing-view.js');
          process.stdout.write('\n' + formatRouting(r.routing, { color: useColor(process.stdout), numExperts: model.config.num_local_experts, title: 'routing per token:' }));
        }
        let extra = '';
        if (offloaded) {
          const { formatOffloadStats } = await import('../infer/offload.js');
          extra = `; ${formatOffloadStats(offloaded.experts.getStats())}`;
          offloaded.close();
        }
        if (typeof engine === 'object' && routingFlags) {
          const dr = engine.drops;
          extra += `; ${dr.skipped} of ${dr.assignments} expert assignments skipped (--skip-threshold), ${dr.capacityDropped} dropped by capacity`;
        }
        process.stderr.write(
          `[${r.ids.length} tokens, ${Math.round(r.tokensPerSec)} tokens/s; prompt ${r.promptTokens} tokens at ${Math.round(r.promptTokensPerSec)} tokens/s, decode ${Math.round(r.decodeTokensPerSec)} tokens/s; ${r.engine}${extra}]\n`,
        );
      });
    });

  program
    .command('synth')
    .description(
      'write a random-weight model in the layer shapes of a real MoE (olmoe-1b-7b, qwen3-30b-a3b) with few layers, streamed to disk, for benchmarks: a GGUF file, or a Hugging Face safetensors directory',
    )
    .requiredOption('--shape <name>', 'olmoe-1b-7b (64 experts top-8, d 2048, width 1024) or qwen3-30b-a3b (128 top-8, width 768, GQA 32/4, qk-norm)')
    .requiredOption('--out <path>', 'output file (gguf) or new directory (safetensors)')
    .option('--format <f>', 'gguf or safetensors', 'gguf')
    .option('--layers <n>', 'layers (default 4 for olmoe-1b-7b, 2 for qwen3-30b-a3b)', intArg('--layers'))
    .option('--quant <q>', 'q8_0 or q4_0 (safetensors: the value grid of the experts, the same values as the GGUF of that seed)', 'q8_0')
    .option('--dtype <d>', 'safetensors storage dtype: bfloat16, float16 or float32', 'bfloat16')
    .option('--seed <n>', 'weight seed', intArg('--seed', 0), 0)
    .option('--context <n>', 'context length written to the file (sizes the KV cache)', intArg('--context'), 1024)
    .action(async (o) => {
      if (o.format === 'safetensors') {
        const { writeSynthSafetensors } = await import('../io/hf/synth.js');
        const r = writeSynthSafetensors(o.shape, o.out, { layers: o.layers, grid: o.quant, dtype: o.dtype, seed: o.seed, context: o.context });
        process.stdout.write(
          `wrote ${r.dir}: ${r.modelType}, ${r.layers} layers, ${r.dtype}, ${r.files.length} file(s), ${(r.params / 1e9).toFixed(2)}B parameters, ${(r.bytes / 1e9).toFixed(2)} GB (experts ${(r.expertBytes / 1e9).toFixed(2)} GB)\n`,
        );
        return;
      }
      if (o.format !== 'gguf') throw new ConfigError(`--format must be gguf or safetensors, got "${o.format}"`);
      const { writeSynthGGUF } = await import('../io/gguf/synth.js');
      const r = writeSynthGGUF(o.shape, o.out, { layers: o.layers, quant: o.quant, seed: o.seed, context: o.context });
      process.stdout.write(
        `wrote ${r.path}: ${r.arch}, ${r.layers} layers, ${r.quant}, ${(r.params / 1e9).toFixed(2)}B parameters, ${(r.bytes / 1e9).toFixed(2)} GB (experts ${(r.expertBytes / 1e9).toFixed(2)} GB)\n`,
      );
    });

  program
    .command('chat')
    .description('chat with a model: one line per user turn (interactive or piped), replies streamed, the conversation kept (/reset, /exit)')
    .option('--ckpt <dir>', 'run directory or checkpoint directory')
    .option('--model <path>', 'a model: a Hugging Face model directory (with its tokenizer files), a moe-ts run/checkpoint directory or a .gguf file')
    .option('--system <text>', 'system message opening the conversation')
    .option('--template <file>', "Jinja chat template overriding the model's (moe-ts byte/BPE tokenizers default to <|role|> lines)")
    .option('--max-tokens <n>', 'reply length limit in tokens', intArg('--max-tokens'), 256)
    .addOption(temperatureOption())
    .addOption(topKOption())
    .addOption(topPOption())
    .option('--seed <n>', 'sampling seed (reply n uses seed + n)', intArg('--seed', 0), 0)
    .addOption(backendOption())
    .addOption(threadsOption())
    .action(async (o) => {
      const { chatCommand } = await import('./chat-command.js');
      const { loadModelForInference } = await import('../infer/index.js');
      await withBackend(o, async () => {
        const loaded = await loadForCommand(o, (p) => loadModelForInference(p));
        await chatCommand(o, undefined, () => loaded);
      });
    });

  program
    .command('eval')
    .description('validation loss/perplexity per domain and routing metrics of a checkpoint or model')
    .option('--ckpt <dir>', 'run directory or checkpoint directory')
    .option('--model <path>', 'a model: a Hugging Face model directory (needs --data), a moe-ts run/checkpoint directory or a .gguf file (recognised by its contents)')
    .option('--data <sources...>', 'corpora to evaluate on (default: the training sources)')
    .option('--batches <n>', 'validation batches per domain', intArg('--batches'))
    .option('--json', 'print JSON instead of a table')
    .addOption(allowNonFiniteOption())
    .option('--trace [tokens]', "show which experts each of the first tokens (default 48) of every domain's first validation window used per MoE layer", intArg('--trace'))
    .addOption(forceExpertOption())
    .addOption(forbidExpertOption())
    .option(
      '--reroute <ref>',
      "also evaluate with test-time re-routing (R2-T2): each token's routing pulled toward that of its nearest correctly predicted tokens of this reference text (a corpus name, file or folder)",
    )
    .option('--reroute-k <n>', 'neighbours per token for --reroute', intArg('--reroute-k'), 8)
    .option(
      '--reroute-lambda <x>',
      "weight of the neighbours' routing for --reroute, in [0, 1]",
      floatArg('--reroute-lambda', (x) => x >= 0 && x <= 1, 'in [0, 1]'),
      0.5,
    )
    .addOption(backendOption())
    .addOption(threadsOption())
    .action(async (o) => {
      const { evalCheckpoint, formatEval } = await import('./eval-command.js');
      const experts = await expertOverridesOf(o);
      await withBackend(o, async () => {
        const trace = o.trace === undefined ? undefined : o.trace === true ? 48 : o.trace;
        const p = modelPath(o);
        const hf = Boolean(o.model) && isHfModelDir(p);
        if (hf && !o.data) throw new ConfigError('eval --model needs --data <sources...> (a Hugging Face model has no training sources)');
        const r = evalCheckpoint(p, {
          sources: o.data,
          batches: o.batches,
          hfModel: hf,
          allowNonFinite: Boolean(o.allowNonFinite),
          trace,
          ...(experts.length ? { experts } : {}),
          ...(o.reroute ? { reroute: o.reroute, rerouteK: o.rerouteK, rerouteLambda: o.rerouteLambda } : {}),
        });
        process.stdout.write(o.json ? JSON.stringify(r, null, 2) + '\n' : formatEval(r));
        if (!o.json && r.trace) {
          const { formatRouting, useColor } = await import('./routing-view.js');
          const E = r.expertUsage[0]?.[0]?.length ?? 0;
          for (const t of r.trace)
            process.stdout.write('\n' + formatRouting(t.tokens, { color: useColor(process.stdout), numExperts: E, title: `routing per token, ${t.domain} (first validation window):` }));
        }
      });
    });

  program
    .command('quantize')
    .description(
      'loss of the quantised fast path vs f32 on validation text; with --out also writes the model as a quantised GGUF file; with --experts-only the routed experts alone at --bits (MoQE), a table per domain',
    )
    .argument('[run]', 'the model (same as --model)')
    .option('--ckpt <dir>', 'run directory or checkpoint directory')
    .option('--model <path>', 'a moe-ts run/checkpoint directory or a .gguf file')
    .option('--quant <q...>', 'formats to report (f32 is always included)', ['q8_0', 'q4_0'])
    .option('--data <sources...>', 'corpus whose validation split is scored (a name or a path; default shakespeare; --experts-only: shakespeare wikitext linux)')
    .option('--tokens <n>', 'validation tokens scored at most (per corpus)', intArg('--tokens', 2), 2048)
    .option('--out <path>', 'write the model as GGUF in the first --quant format; --experts-only: the directory for quantize-experts.md/.json (default: the run directory)')
    .option('--experts-only', 'quantise only the routed FFN experts (MoQE); attention, embeddings, dense FFNs and the head stay at --rest')
    .option(
      '--bits <b...>',
      '--experts-only: expert formats to compare, among 2 (q2_m), 3 (q3_m), 4 (q4_0), 8 (q8_0), ternary (tq_e: QMoE ternary, entropy-coded), ternary:Z (tq_e with at least a fraction Z of zeros per row), ternary-gptq[:Z] (the same rounded by GPTQ on calibration text)',
      ['2', '3', '4', '8'],
    )
    .option('--rest <fmt>', '--experts-only: format of every other weight, f32 or q8_0', 'f32')
    .option('--calibration <n>', '--experts-only ternary-gptq: training tokens per corpus whose expert inputs GPTQ uses', intArg('--calibration', 2), 2048)
    .option('--skip-thresholds <t...>', 'also score AdapMoE expert skipping at these thresholds (f32 weights)')
    .option('--capacity-factors <c...>', 'also score capacity-aware token dropping at these capacity factors (f32 weights)')
    .option('--json', 'print JSON instead of a table')
    .action(async (run: string | undefined, o) => {
      if (run) {
        if (o.model || o.ckpt) throw new ConfigError('quantize: give the model as the argument or as --model/--ckpt, not both');
        o.model = run;
      }
      if (o.expertsOnly) {
        const { runQuantizeExperts, parseExpertBits } = await import('../adapt/quantize-experts.js');
        const { formatAdaptTable } = await import('../adapt/common.js');
        const { WasmQuantKernels } = await import('../kernels/wasm/quant.js');
        const fs = await import('node:fs');
        const p = modelPath(o);
        const bits = o.bits as string[];
        for (const b of bits) parseExpertBits(b);
        const out = o.out ?? (fs.statSync(p).isDirectory() ? p : '.');
        const r = runQuantizeExperts({ model: p, bits, rest: o.rest, sources: o.data, tokens: o.tokens, calibration: o.calibration, out, kernels: new WasmQuantKernels() });
        process.stdout.write(o.json ? JSON.stringify(r, null, 2) + '\n' : formatAdaptTable(r) + `\ntable: ${r.files!.md}, ${r.files!.json}\n`);
        return;
      }
      if (o.data && o.data.length > 1) throw new ConfigError('quantize: --data takes one corpus (several only with --experts-only)');
      o.data = o.data?.[0] ?? 'shakespeare';
      const { loadModelForInference, quantizedLoss, routingLoss } = await import('../infer/index.js');
      const { QUANT_FORMATS } = await import('../kernels/quant.js');
      const { loadCorpusSplits } = await import('../data/corpus.js');
      const { WasmQuantKernels } = await import('../kernels/wasm/quant.js');
      for (const q of o.quant) if (!(QUANT_FORMATS as readonly string[]).includes(q)) throw new Error(`--quant must be among ${QUANT_FORMATS.join(', ')}, got "${q}"`);
      const { model, tokenizer } = await loadForCommand(o, (p) => loadModelForInference(p));
      const c = loadCorpusSplits(o.data);
      // the held-out part: the corpus's validation file, else the tail the trainer holds out (10%)
      const text = c.valid ?? c.train.slice(Math.floor(c.train.length * 0.9));
      const quants = ['f32', ...o.quant.filter((q: string) => q !== 'f32')];
      const tm = asTransformer(model, 'decodeEngine', 'quantize');
      const r = quantizedLoss(tm, tokenizer, text, { quants, maxTokens: o.tokens, kernels: new WasmQuantKernels() });
      const num = (flag: string, v: string, ok: (x: number) => boolean): number => {
        const x = Number(v);
        if (!ok(x)) throw new Error(`${flag}: ${JSON.stringify(v)} is out of range`);
        return x;
      };
      const settings = [
        {},
        ...((o.skipThresholds ?? []) as string[]).map((v) => ({ skipThreshold: num('--skip-thresholds', v, (x) => x > 0 && x < 1) })),
        ...((o.capacityFactors ?? []) as string[]).map((v) => ({ capacityFactor: num('--capacity-factors', v, (x) => x > 0 && Number.isFinite(x)) })),
      ];
      const rr = settings.length > 1 ? routingLoss(tm, tokenizer, text, { settings, maxTokens: o.tokens, kernels: new WasmQuantKernels() }) : [];
      if (o.json) process.stdout.write(JSON.stringify({ data: o.data, results: r, ...(rr.length ? { routing: rr } : {}) }, null, 2) + '\n');
      else {
        process.stdout.write(`validation loss on ${o.data} (${r[0].tokens} tokens):\n`);
        for (const x of r)
          process.stdout.write(
            `  ${x.quant.padEnd(5)} loss ${x.loss.toFixed(4)}  (${(x.loss - r[0].loss >= 0 ? '+' : '') + (x.loss - r[0].loss).toFixed(4)} vs f32)  weights ${(x.weightBytes / 1e6).toFixed(2)} MB\n`,
          );
        if (rr.length) {
          process.stdout.write(`routing-aware inference (f32, prompt batches of 128 tokens):\n`);
          for (const x of rr) {
            const what = x.skipThreshold ? `skip < ${x.skipThreshold}` : x.capacityFactor ? `capacity ${x.capacityFactor}` : 'baseline';
            const dl = x.loss - rr[0].loss;
            process.stdout.write(
              `  ${what.padEnd(14)} loss ${x.loss.toFixed(4)}  (${(dl >= 0 ? '+' : '') + dl.toFixed(4)})  assignments skipped ${(100 * x.skippedShare).toFixed(1)}%, dropped ${(100 * x.droppedShare).toFixed(1)}%  ${Math.round(x.tokensPerSec)} tokens/s\n`,
            );
          }
        }
      }
      if (o.out) {
        const { exportGGUF } = await import('../io/gguf/index.js');
        const rep = exportGGUF(asTransformer(model, 'gguf', 'quantize --out'), tokenizer, o.out, { quant: o.quant[0] });
        process.stderr.write(`wrote ${o.out}: ${rep.arch}, ${rep.quant}, ${(rep.bytes / 1e6).toFixed(2)} MB\n`);
      }
    });

  program
    .command('convert')
    .description('export a trained model to another format: GGUF for llama.cpp, or a Hugging Face model directory')
    .argument('<src>', 'run directory, checkpoint directory or model file')
    .argument('<out>', 'output file or directory')
    .requiredOption('--to <format>', 'target format: gguf, hf')
    .option('--quant <type>', 'gguf: tensor type f32, f16, bf16, q8_0, q4_0 (norms and routers stay f32; rows not a multiple of 32 fall back to f16)')
    .option('--arch <name>', 'gguf: llama.cpp architecture (default auto: the first that computes the model: llama, bailingmoe, qwen2moe, qwen3moe, olmoe, deepseek2)')
    .option('--dtype <dtype>', 'hf: weight dtype float32 (default), bfloat16, float16')
    .option('--overwrite', 'replace <out> if it exists')
    .action(async (src: string, out: string, o) => {
      const { convertCommand } = await import('./convert-command.js');
      const given = ['quant', 'arch', 'dtype'].filter((k) => o[k] !== undefined);
      await withBackend({ backend: 'js' }, async () => {
        process.stdout.write(convertCommand(src, out, o.to, o, given) + '\n');
      });
    });

  program
    .command('upcycle')
    .description(
      'build an MoE from a dense model: copies of its FFN (sparse upcycling), its FFN split into experts, or several dense models one expert each; writes a run directory + upcycle.md/json (before/after)',
    )
    .argument('<dense...>', 'dense model(s): moe-ts run/checkpoint directories, Hugging Face directories or .gguf files')
    .requiredOption('--out <dir>', 'run directory to write (train --model <dir> continues training it)')
    .addOption(
      new Option('--method <m>', 'copy (sparse upcycling), split-random, split-clustered (FFN splitting), mix (one expert per dense model)')
        .choices(['copy', 'split-random', 'split-clustered', 'mix'])
        .default('copy'),
    )
    .option('--experts <n>', 'routed experts (copy/split; mix: one per model)', intArg('--experts'))
    .option('--top-k <k>', 'experts per token (default 2)', intArg('--top-k'))
    .option(
      '--noise <s>',
      'copy: Gaussian noise on each expert weight, as a fraction of its std (default 0: exact copies)',
      floatArg('--noise', (x) => x >= 0, '>= 0'),
    )
    .option('--shared <n>', 'split: shared experts from the most active neurons (CMoE)', intArg('--shared', 0))
    .option('--calibration <n>', 'split: calibration windows per domain (default 8)', intArg('--calibration'))
    .option('--router <name>', 'router of the new MoE (default topk)')
    .option('--attention-experts <n>', 'BAM: also upcycle attention into a soft mixture of n attention experts (mix with n = models: one per model)', intArg('--attention-experts'))
    .option('--data <sources...>', 'corpora for the before/after table and calibration (default: shakespeare wikitext linux)')
    .option('--batches <n>', 'validation batches per domain', intArg('--batches'))
    .option('--seed <n>', 'seed of router init, noise and random splits', intArg('--seed', 0), 0)
    .option('--overwrite', 'replace a run already in --out')
    .addOption(backendOption())
    .addOption(threadsOption())
    .action(async (dense: string[], o) => {
      const { runUpcycle } = await import('../adapt/upcycle.js');
      const { formatAdaptTable } = await import('../adapt/common.js');
      await withBackend(o, async () => {
        const r = runUpcycle({
          models: dense,
          out: o.out,
          method: o.method,
          numExperts: o.experts,
          topK: o.topK,
          noise: o.noise,
          sharedExperts: o.shared,
          calibration: o.calibration,
          router: o.router,
          attentionExperts: o.attentionExperts,
          sources: o.data,
          batches: o.batches,
          seed: o.seed,
          overwrite: Boolean(o.overwrite),
        });
        process.stdout.write(formatAdaptTable(r) + `\nrun: ${o.out} (checkpoint ${r.checkpoint}); table: ${r.files.md}, ${r.files.json}\n`);
      });
    });

  program
    .command('prune')
    .description('drop the least-used experts of every MoE layer (router statistics on calibration text); table of loss per pruned fraction; writes the pruned run')
    .argument('<model>', 'an MoE model: run/checkpoint directory, Hugging Face directory or .gguf file')
    .requiredOption('--out <dir>', 'run directory for the pruned model (the --save fraction)')
    .option('--fractions <list>', 'comma-separated fractions of experts to prune, each in [0, 1)', '0.25,0.5')
    .option(
      '--save <f>',
      'which fraction to save (default: the largest)',
      floatArg('--save', (x) => x >= 0 && x < 1, 'in [0, 1)'),
    )
    .option('--calibration <n>', 'calibration windows per domain (default 8)', intArg('--calibration'))
    .option(
      '--criterion <c>',
      'which experts go: usage (least router weight on calibration text), router-change (router rows that moved least from --reference), or moe-pruner (no expert goes: that fraction of the weights inside each expert, by |W| x gate-weighted input norm)',
      'usage',
    )
    .option('--reference <model>', 'router-change: the model fine-tuning started from (e.g. the upcycled run)')
    .option('--data <sources...>', 'corpora for calibration and the table (default: shakespeare wikitext linux)')
    .option('--batches <n>', 'validation batches per domain', intArg('--batches'))
    .option('--overwrite', 'replace a run already in --out')
    .addOption(backendOption())
    .addOption(threadsOption())
    .action(async (model: string, o) => {
      const fractions = String(o.fractions)
        .split(',')
        .map((v) => {
          const x = v.trim() === '' ? NaN : Number(v);
          if (!(x >= 0 && x < 1)) throw new ConfigError(`--fractions must be a comma-separated list of numbers in [0, 1), got "${v}"`);
          return x;
        });
      const { runPrune } = await import('../adapt/prune.js');
      const { formatAdaptTable } = await import('../adapt/common.js');
      await withBackend(o, async () => {
        const r = runPrune({
          model,
          out: o.out,
          fractions,
          save: o.save,
          calibration: o.calibration,
          sources: o.data,
          batches: o.batches,
          overwrite: Boolean(o.overwrite),
          criterion: o.criterion,
          reference: o.reference,
        });
        process.stdout.write(formatAdaptTable(r) + `\nrun: ${o.out}; table: ${r.files.md}, ${r.files.json}\n`);
      });
    });

  program
    .command('extend')
    .description('add experts to a trained MoE for a new domain (MoExtend, PMoE): old experts and the rest frozen, new experts + their router rows trained; writes the run + extend.md/json')
    .argument('<model>', 'an MoE model (topk router with renormalised weights): run/checkpoint directory, Hugging Face directory or .gguf file')
    .requiredOption('--out <dir>', 'run directory to write')
    .requiredOption('--add-experts <n>', 'new experts per MoE layer', intArg('--add-experts'))
    .requiredOption('--data <sources...>', 'the new domain: corpora the new experts train on (e.g. linux)')
    .addOption(new Option('--init <how>', 'copy: copies of the experts the router uses most on --data; fresh: random').choices(['copy', 'fresh']).default('copy'))
    .option('--train-old-router-rows', 'train the old router rows too (default: frozen)')
    .option('--steps <n>', 'training steps (default 200)', intArg('--steps'))
    .option(
      '--lr <x>',
      "learning rate (default: the run config's)",
      floatArg('--lr', (x) => x > 0, '> 0'),
    )
    .option('--phase-in <n>', 'steps over which the new experts are phased in (default 50)', intArg('--phase-in'))
    .option('--calibration <n>', 'new-domain windows for choosing the copied experts (default 8)', intArg('--calibration'))
    .option('--eval-data <sources...>', 'corpora for the before/after table (default: shakespeare wikitext linux)')
    .option('--batches <n>', 'validation batches per domain', intArg('--batches'))
    .option('--seed <n>', 'seed', intArg('--seed', 0))
    .option('--overwrite', 'replace a run already in --out')
    .addOption(backendOption())
    .addOption(threadsOption())
    .action(async (model: string, o) => {
      const { runExtend } = await import('../adapt/extend.js');
      const { formatAdaptTable } = await import('../adapt/common.js');
      await withBackend(o, async () => {
        const r = await runExtend({
          model,
          out: o.out,
          addExperts: o.addExperts,
          data: o.data,
          init: o.init,
          trainOldRouterRows: Boolean(o.trainOldRouterRows),
          steps: o.steps,
          lr: o.lr,
          phaseInSteps: o.phaseIn,
          calibration: o.calibration,
          sources: o.evalData,
          batches: o.batches,
          seed: o.seed,
          overwrite: Boolean(o.overwrite),
        });
        process.stdout.write(formatAdaptTable(r) + `\nrun: ${o.out}; table: ${r.files.md}, ${r.files.json}\n`);
      });
    });

  program
    .command('merge')
    .description('merge groups of experts into fewer experts (or the whole MoE into a dense FFN) by averaging; writes the run + merge.md/json (before/after)')
    .argument('<model>', 'an MoE model: run/checkpoint directory, Hugging Face directory or .gguf file')
    .requiredOption('--out <dir>', 'run directory to write')
    .option('--experts <n>', 'merged experts per MoE layer', intArg('--experts'))
    .addOption(new Option('--by <how>', 'grouping: usage (most used experts lead, others join the most similar) or similarity (weight cosine)').choices(['usage', 'similarity']).default('usage'))
    .option('--groups <list>', 'the same groups in every layer, e.g. "0,1;2,3" (instead of --experts)')
    .option('--dense', 'merge every MoE layer into one dense FFN')
    .option('--uniform', 'plain average (default: weighted by router usage on calibration text)')
    .option('--calibration <n>', 'calibration windows per domain (default 8)', intArg('--calibration'))
    .option('--data <sources...>', 'corpora for calibration and the table (default: shakespeare wikitext linux)')
    .option('--batches <n>', 'validation batches per domain', intArg('--batches'))
    .option('--overwrite', 'replace a run already in --out')
    .addOption(backendOption())
    .addOption(threadsOption())
    .action(async (model: string, o) => {
      const { runMerge, parseGroups } = await import('../adapt/merge.js');
      const { formatAdaptTable } = await import('../adapt/common.js');
      await withBackend(o, async () => {
        const r = runMerge({
          model,
          out: o.out,
          experts: o.experts,
          by: o.by,
          groups: o.groups !== undefined ? parseGroups(String(o.groups)) : undefined,
          dense: Boolean(o.dense),
          weighted: !o.uniform,
          calibration: o.calibration,
          sources: o.data,
          batches: o.batches,
          overwrite: Boolean(o.overwrite),
        });
        process.stdout.write(formatAdaptTable(r) + `\nrun: ${o.out}; table: ${r.files.md}, ${r.files.json}\n`);
      });
    });

  program
    .command('distill')
    .description('distil an MoE teacher into a dense student (FFN initialised from the experts, then KL to the teacher + CE); writes the run + distill.md/json (teacher vs student per domain)')
    .argument('<teacher>', 'an MoE model: run/checkpoint directory, Hugging Face directory or .gguf file')
    .requiredOption('--out <dir>', 'run directory of the student')
    .addOption(
      new Option('--init <how>', 'student FFN init: gather (router-usage-weighted expert average), uniform (plain average), fresh (random)').choices(['gather', 'uniform', 'fresh']).default('gather'),
    )
    .option(
      '--temperature <t>',
      'softmax temperature of the KL term (default 2)',
      floatArg('--temperature', (x) => x > 0, '> 0'),
    )
    .option(
      '--alpha <a>',
      'weight of the KL term, 1 - alpha on cross-entropy (default 0.5)',
      floatArg('--alpha', (x) => x >= 0 && x <= 1, 'in [0, 1]'),
    )
    .option('--steps <n>', 'training steps (default 200)', intArg('--steps'))
    .option(
      '--lr <x>',
      "learning rate (default: the teacher run config's)",
      floatArg('--lr', (x) => x > 0, '> 0'),
    )
    .option('--train-data <sources...>', "training corpora (default: the teacher run's)")
    .option('--calibration <n>', 'calibration windows per domain (expert usage, KL report; default 8)', intArg('--calibration'))
    .option('--data <sources...>', 'corpora for the table (default: shakespeare wikitext linux)')
    .option('--batches <n>', 'validation batches per domain', intArg('--batches'))
    .option('--seed <n>', 'seed', intArg('--seed', 0))
    .option('--overwrite', 'replace a run already in --out')
    .addOption(backendOption())
    .addOption(threadsOption())
    .action(async (teacher: string, o) => {
      const { runDistill } = await import('../adapt/distill.js');
      const { formatAdaptTable } = await import('../adapt/common.js');
      await withBackend(o, async () => {
        const r = await runDistill({
          teacher,
          out: o.out,
          init: o.init,
          temperature: o.temperature,
          alpha: o.alpha,
          steps: o.steps,
          lr: o.lr,
          data: o.trainData,
          calibration: o.calibration,
          sources: o.data,
          batches: o.batches,
          seed: o.seed,
          overwrite: Boolean(o.overwrite),
        });
        process.stdout.write(formatAdaptTable(r) + `\nrun: ${o.out}; table: ${r.files.md}, ${r.files.json}\n`);
      });
    });

  const peft = program.command('peft').description('LoRA-expert adapters apart from their base: attach an adapter file to a base, or merge shared adapters into the base weights');
  peft
    .command('attach')
    .description('a base model + an adapters.safetensors (from train --peft) into one run directory, with a before/after table')
    .argument('<base>', 'the base model (run/checkpoint directory, Hugging Face directory, .gguf)')
    .argument('<adapters>', 'adapter file written by train --peft')
    .requiredOption('--out <dir>', 'run directory to write')
    .option('--data <sources...>', 'corpora for the table (default: shakespeare wikitext linux)')
    .option('--batches <n>', 'validation batches per domain', intArg('--batches'))
    .option('--overwrite', 'replace a run already in --out')
    .action(async (base: string, adapters: string, o) => {
      const { runPeftAttach } = await import('../adapt/peft.js');
      const { formatAdaptTable } = await import('../adapt/common.js');
      await withBackend({ backend: process.env.MOE_BACKEND ?? 'auto' }, async () => {
        const r = runPeftAttach({ base, adapters, out: o.out, sources: o.data, batches: o.batches, overwrite: Boolean(o.overwrite) });
        process.stdout.write(formatAdaptTable(r) + `\nrun: ${o.out}; table: ${r.files.md}\n`);
      });
    });
  peft
    .command('merge')
    .description('fold shared LoRA adapters into the base weights (exact; routed LoRA experts cannot merge) and write a plain run directory')
    .argument('<run>', 'a train --peft run (or a peft attach output)')
    .requiredOption('--out <dir>', 'run directory to write')
    .option('--data <sources...>', 'corpora for the table (default: shakespeare wikitext linux)')
    .option('--batches <n>', 'validation batches per domain', intArg('--batches'))
    .option('--overwrite', 'replace a run already in --out')
    .action(async (run: string, o) => {
      const { runPeftMerge } = await import('../adapt/peft.js');
      const { formatAdaptTable } = await import('../adapt/common.js');
      await withBackend({ backend: process.env.MOE_BACKEND ?? 'auto' }, async () => {
        const r = runPeftMerge({ run, out: o.out, sources: o.data, batches: o.batches, overwrite: Boolean(o.overwrite) });
        process.stdout.write(formatAdaptTable(r) + `\nrun: ${o.out}; table: ${r.files.md}\n`);
      });
    });

  program
    .command('bench-routers')
    .description('train every router and the FLOP-matched dense baseline on the same data and compute; write report.html + results.json')
    .option('--routers <names>', 'comma-separated routers to compare (default: all registered)')
    .option('--steps <n>', 'training steps per model', intArg('--steps'))
    .option('--data <sources...>', 'corpora (default: shakespeare wikitext linux, equal weights)')
    .option('--out <dir>', 'output directory; rerunning with the same one skips finished routers (default: runs/bench-routers)')
    .option('--quick', 'tiny models and few steps: a smoke run of every router in a few minutes')
    .option('--config <file>', 'JSON overriding the preset: "model", "training", "data" sections, and "bench": {"router_options": {"<router>": {...}}}')
    .option('--seed <n>', 'random seed shared by all models', intArg('--seed', 0))
    .option(
      '--seeds <n>',
      'train every model with n seeds (seed, seed+1, ...) and report mean ± std (default: as many, up to 3, as fit an estimated 30 minutes on 2 cores; 1 with --quick)',
      intArg('--seeds'),
    )
    .addOption(backendOption())
    .addOption(threadsOption())
    .action(async (o) => {
      const { benchRoutersCommand } = await import('../bench-routers/run.js');
      const r = await withBackend(o, (backend) => benchRoutersCommand(o, backend, (line) => process.stdout.write(line + '\n')));
      const { benchVerdict } = await import('./bench-verdict.js');
      const verdict = benchVerdict(r.results.analysis);
      if (verdict) process.stdout.write(verdict + '\n');
    });

  program
    .command('train-forecast')
    .description('train a Time-MoE time-series forecaster (default: daily max temperature of Seattle, NOAA) and report MAE/MSE vs naive and seasonal-naive, with an HTML forecast plot')
    .option('--config <file>', 'JSON config with "model", "forecast", "training" and "data" sections (docs/time-series.md)')
    .option('--series <name|csv>', 'an embedded series (seattle-weather) or a CSV file path')
    .option('--column <name>', 'value column of the CSV')
    .option('--steps <n>', 'training steps', intArg('--steps'))
    .option('--seed <n>', 'random seed', intArg('--seed', 0))
    .option('--out <dir>', 'run directory (config.json, log.jsonl, model.safetensors, results.json, report.html)')
    .option('--overwrite', 'replace a forecast run already in --out')
    .option('--resume', 'continue the run in --out from its latest checkpoint with its own config (--steps N trains it longer)')
    .option('--quiet', 'no progress output')
    .addOption(backendOption())
    .addOption(threadsOption())
    .action(async (o) => {
      const { parseForecastRunConfig, trainForecast, loadForecastCheckpoint } = await import('../train/forecast.js');
      const { writeForecastReport, formatForecastTable } = await import('../bench-routers/report/forecast-report.js');
      if (o.resume && (o.config || o.series || o.column || o.seed !== undefined || o.overwrite))
        throw new ConfigError('train-forecast --resume: the run keeps its own config; only --steps, --out and the backend flags apply');
      if (o.resume && !o.out) throw new ConfigError('train-forecast --resume needs --out <run dir>');
      const raw = o.resume ? (loadForecastCheckpoint(o.out).state.config as unknown as Record<string, unknown>) : o.config ? readConfigJson(o.config) : {};
      const sec = (k: string): Record<string, unknown> => (raw[k] && typeof raw[k] === 'object' && !Array.isArray(raw[k]) ? (raw[k] as Record<string, unknown>) : {});
      const cfgIn: Record<string, unknown> = { ...raw };
      if (o.steps !== undefined || o.seed !== undefined)
        cfgIn.training = { ...sec('training'), ...(o.steps !== undefined ? { steps: o.steps } : {}), ...(o.seed !== undefined ? { seed: o.seed } : {}) };
      if (o.series !== undefined || o.column !== undefined)
        cfgIn.data = { ...sec('data'), ...(o.series !== undefined ? { series: o.series } : {}), ...(o.column !== undefined ? { column: o.column } : {}) };
      const cfg = parseForecastRunConfig(cfgIn, o.config ? `config ${o.config}` : 'forecast config');
      const out = o.out ?? path.join('runs', `forecast-${timestamp()}`);
      await withBackend(o, async (backend) => {
        const log = (line: string): void => {
          if (!o.quiet) process.stderr.write(line + '\n');
        };
        log(`train-forecast: Time-MoE on ${cfg.data.series}, ${cfg.training.steps} steps, context ${cfg.training.seq_len}, heads ${cfg.forecast.horizons.join('/')} on ${backend}`);
        const { results } = trainForecast({
          config: cfg,
          outDir: out,
          overwrite: Boolean(o.overwrite),
          resume: Boolean(o.resume),
          events: { onEval: (r) => log(`step ${r.step}/${cfg.training.steps}: validation Huber ${r.valLoss.toFixed(4)}`) },
        });
        const report = writeForecastReport(out);
        process.stdout.write(`${formatForecastTable(results)}\nrun: ${out}; report: ${report}\n`);
      });
    });

  program
    .command('analyze')
    .description('inspect the experts: weight similarity, output norms, routing agreement across layers, per-domain usage, loss contribution (ablation), routing traces; an HTML page plus a JSON file')
    .argument('<model>', 'a moe-ts run/checkpoint directory, a .gguf file, or a Hugging Face model directory (needs --data)')
    .option('--out <file>', 'where to write the page (default: <model>/analysis.html; the numbers go to the same name .json)')
    .option('--data <sources...>', 'validation corpora (default: the training sources)')
    .option('--batches <n>', 'validation batches per domain', intArg('--batches'), 2)
    .option('--steer', 'also report which experts change the next-token distribution on --prompt texts (KL when each is forbidden)')
    .option('--prompt <text...>', 'prompts for --steer', ['To be, or not to be', 'int main(void) {'])
    .option('--no-ablation', 'skip the per-expert loss contribution (one evaluation per expert)')
    .option('--trace <tokens>', "routing trace tokens of each domain's first validation window, in the JSON file", intArg('--trace', 0), 64)
    .option('--json', 'print the analysis as JSON too')
    .addOption(backendOption())
    .addOption(threadsOption())
    .action(async (model, o) => {
      const { analyzeCommand } = await import('./analyze-command.js');
      await withBackend(o, async () => {
        const hf = isHfModelDir(model);
        if (hf && !o.data) throw new ConfigError('analyze on a Hugging Face model needs --data <sources...> (it has no training sources)');
        const r = analyzeCommand(model, { sources: o.data, batches: o.batches, hfModel: hf, prompts: o.steer ? o.prompt : undefined, ablation: o.ablation, trace: o.trace, out: o.out });
        if (o.json) process.stdout.write(JSON.stringify(r.analysis) + '\n');
        const a = r.analysis;
        const top = a.ablation ? a.layers.flatMap((l, li) => a.ablation![li].map((d, e) => ({ l, e, d }))).sort((x, y) => y.d - x.d)[0] : null;
        process.stderr.write(
          `analyze: ${r.html} and ${r.json} (${a.layers.length} MoE layers x ${a.numExperts} experts, loss ${a.loss.toFixed(4)}${top ? `; most needed expert: layer ${top.l} expert ${top.e}, +${top.d.toFixed(4)} loss when forbidden` : ''}${a.steer?.length ? `; most steering: layer ${a.steer[0].layer} expert ${a.steer[0].expert}, KL ${a.steer[0].kl.toFixed(4)}` : ''})${a.note ? `; ${a.note}` : ''}\n`,
        );
      });
    });

  program
    .command('report')
    .description('write an HTML report of one training run: loss, learning rate, gradient norm, load balance, drops, experts per token')
    .argument('<run>', 'run directory (made by moe-ts train)')
    .option('--out <file>', 'where to write the page (default: <run>/report.html)')
    .action(async (run: string, o: { out?: string }) => {
      // a train-forecast run: its own page (forecast vs truth), from its results.json
      const res = path.join(run, 'results.json');
      if (fs.existsSync(res) && fs.statSync(res).size < 64 * 1024 * 1024 && /"kind"\s*:\s*"forecast"/.test(fs.readFileSync(res, 'utf8').slice(0, 200))) {
        const { writeForecastReport } = await import('../bench-routers/report/forecast-report.js');
        process.stdout.write(`report: ${writeForecastReport(run, o.out)} (Time-MoE forecast)\n`);
        return;
      }
      const { writeRunReport } = await import('../bench-routers/report/run-report.js');
      const r = writeRunReport(run, o.out);
      process.stdout.write(`report: ${r.path} (${r.run.steps.length} logged steps, ${r.run.evals.length} evaluations)\n`);
    });

  program
    .command('data')
    .description('list the embedded corpora (size, splits, source, license); any UTF-8 file or folder also works as --data PATH')
    .option('--json', 'print JSON')
    .action(async (o) => {
      const { listCorpora, corpusDir } = await import('../data/corpus.js');
      const list = listCorpora();
      if (o.json) {
        process.stdout.write(JSON.stringify({ dir: corpusDir(), corpora: list }, null, 2) + '\n');
        return;
      }
      const mb = (b: number): string => `${(b / 1e6).toFixed(2)} MB`;
      process.stdout.write(`corpora in ${corpusDir()}:\n`);
      for (const c of list) {
        process.stdout.write(`\n  ${c.name.padEnd(12)} ${c.kind.padEnd(6)} ${mb(c.bytes).padStart(9)}  ${c.description}\n`);
        process.stdout.write(`    files:   ${c.files.map((f) => `${f.file} (${f.split}, ${mb(f.bytes)})`).join(', ')}\n`);
        process.stdout.write(`    splits:  ${c.splits}\n    source:  ${c.source}\n    license: ${c.license}\n`);
      }
      process.stdout.write(`\nAny UTF-8 text file or folder of text files also works: --data path/to/file.txt or --data path/to/folder/\n`);
    });

  program
    .command('routers')
    .description('list the registered routers, expert types, dispatch strategies and balancing losses, with their options and traits')
    .action(async () => {
      const { formatRegistries } = await import('./routers-command.js');
      process.stdout.write(formatRegistries());
    });

  return program;
}

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  program.exitOverride();
  try {
    await program.parseAsync(argv);
    return 0;
  } catch (e) {
    const err = e as Error & { code?: string; exitCode?: number };
    if (err.code && err.code.startsWith('commander.')) {
      // commander already printed its message (help, version, or an argument error)
      return err.exitCode ?? 1;
    }
    process.stderr.write(`moe-ts: ${err.message}\n`);
    if (process.env.MOE_DEBUG) process.stderr.write(`${err.stack}\n`);
    return err instanceof TrainingInterruptedError ? 130 : 1;
  }
}

const isEntry = process.argv[1] && import.meta.url === new URL(`file://${fs.realpathSync(process.argv[1])}`).href;
if (isEntry) {
  main(process.argv).then((code) => {
    process.exitCode = code;
  });
}
