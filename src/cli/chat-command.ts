/** `moe-ts chat`: a readline loop over ChatSession; works the same typed at a terminal or piped in. */
import * as fs from 'node:fs';
import * as readline from 'node:readline';
import { ChatSession, loadModelForInference } from '../infer/index.js';
import type { LanguageModel } from '../models/family.js';
import type { Tokenizer } from '../data/tokenizer/index.js';

type InferenceModelLike = { model: LanguageModel; tokenizer: Tokenizer };

export interface ChatCommandOptions {
  ckpt?: string;
  system?: string;
  template?: string;
  maxTokens: number;
  temperature: number;
  topK: number;
  topP: number;
  seed: number;
}

export interface ChatIO {
  input: NodeJS.ReadableStream;
  output: NodeJS.WritableStream;
  err: NodeJS.WritableStream;
  /** Show "> " prompts (a terminal). */
  interactive: boolean;
}

const MAX_TEMPLATE_BYTES = 1024 * 1024;

function readTemplate(file: string): string {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch (e) {
    throw new Error(`--template ${file}: cannot read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  if (!st.isFile()) throw new Error(`--template ${file}: not a regular file`);
  if (st.size > MAX_TEMPLATE_BYTES) throw new Error(`--template ${file}: ${st.size} bytes, more than ${MAX_TEMPLATE_BYTES}`);
  return fs.readFileSync(file, 'utf8');
}

/** `load` gives the model and tokenizer (default: the --ckpt checkpoint). */
export async function chatCommand(o: ChatCommandOptions, io?: ChatIO, load: () => InferenceModelLike = () => loadModelForInference(o.ckpt ?? '')): Promise<void> {
  const { input, output, err, interactive } = io ?? {
    input: process.stdin,
    output: process.stdout,
    err: process.stderr,
    interactive: Boolean(process.stdin.isTTY && process.stdout.isTTY),
  };
  const template = o.template !== undefined ? readTemplate(o.template) : undefined;
  const { model, tokenizer } = load();
  const session = new ChatSession(model, tokenizer, {
    maxNewTokens: o.maxTokens,
    temperature: o.temperature,
    topK: o.topK,
    topP: o.topP,
    seed: o.seed,
    ...(o.system !== undefined ? { system: o.system } : {}),
    ...(template !== undefined ? { template } : {}),
  });
  if (interactive) err.write(`moe-ts chat: ${tokenizer.name}; one line per turn, /reset forgets the conversation, /exit or Ctrl-D ends\n`);
  const rl = readline.createInterface({ input, ...(interactive ? { output, prompt: '> ' } : {}), terminal: interactive });
  rl.on('SIGINT', () => rl.close()); // Ctrl-C at the prompt ends the chat
  if (interactive) rl.prompt();
  let turn = 0;
  try {
    for await (const line of rl) {
      const text = line.trim();
      if (text === '/exit' || text === '/quit') break;
      if (text === '/reset') {
        session.reset();
        turn = 0;
        err.write('[conversation reset]\n');
      } else if (text.length > 0) {
        turn++;
        const r = session.send(text, (piece) => output.write(piece));
        output.write('\n');
        const dropped = r.droppedTurns ? `, ${r.droppedTurns} oldest message(s) left out to fit the context` : '';
        err.write(`[turn ${turn}: prompt ${r.promptTokens} tokens, reply ${r.ids.length} tokens (${r.stopReason}), ${Math.round(r.tokensPerSec)} tokens/s${dropped}]\n`);
        if (r.note) err.write(`[${r.note}]\n`);
      }
      if (interactive) rl.prompt();
    }
  } finally {
    rl.close();
  }
}
