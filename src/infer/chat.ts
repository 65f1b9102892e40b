/**
 * Chat: conversations rendered through the model's Jinja chat template (tokenizer_config.json's
 * chat_template, rendered by @huggingface/jinja as transformers' apply_chat_template does) and
 * replies generated with the KV cache, ending at the tokenizer's stop ids (eos). moe-ts's own
 * byte/BPE tokenizers use DEFAULT_CHAT_TEMPLATE, whose replies end at DEFAULT_CHAT_STOP_TEXT.
 */
import { Template } from '@huggingface/jinja';
import type { LanguageModel } from '../models/family.js';
import { DEFAULT_CHAT_STOP_TEXT, DEFAULT_CHAT_TEMPLATE } from '../data/tokenizer/chat-template.js';
import type { Tokenizer } from '../data/tokenizer/types.js';
import { generate, type GenerateResult } from './generate.js';
import type { SamplingOptions } from './sampling.js';

/** one chat message: role (system, user, assistant, ...) and its text */
export interface ChatMessage {
  role: string;
  content: string;
}

/** variables of a chat template rendering: generation prompt, bos/eos token text, extras */
export interface ChatTemplateOptions {
  /** End with the opening of an assistant turn (default true). */
  addGenerationPrompt?: boolean;
  bosToken?: string;
  eosToken?: string;
  /** Further template variables (e.g. tools, enable_thinking). */
  extra?: Record<string, unknown>;
}

/** Parse once; errors name the template's source. */
export function compileChatTemplate(template: string, source = 'chat template'): Template {
  if (typeof template !== 'string' || template.length === 0) throw new Error(`${source}: empty`);
  try {
    return new Template(template);
  } catch (e) {
    throw new Error(`${source}: cannot parse: ${(e as Error).message}`);
  }
}

/** Render messages as apply_chat_template(tokenize=False) does: messages, add_generation_prompt, bos_token, eos_token. */
export function renderChatTemplate(template: string | Template, messages: ChatMessage[], opts: ChatTemplateOptions = {}, source = 'chat template'): string {
  const t = typeof template === 'string' ? compileChatTemplate(template, source) : template;
  messages.forEach((m, i) => {
    if (typeof m !== 'object' || m === null || typeof m.role !== 'string' || typeof m.content !== 'string') {
      throw new Error(`chat: messages[${i}] must be {role: string, content: string}`);
    }
  });
  try {
    return t.render({
      ...opts.extra,
      messages: messages.map((m) => ({ ...m })),
      add_generation_prompt: opts.addGenerationPrompt ?? true,
      bos_token: opts.bosToken ?? '',
      eos_token: opts.eosToken ?? '',
    });
  } catch (e) {
    throw new Error(`${source}: ${(e as Error).message.split('\n')[0]}`);
  }
}

/** The template to chat with: an explicit one, else the tokenizer's; an error when neither exists. */
export function resolveChatTemplate(tok: Tokenizer, override?: string): string {
  if (override !== undefined) return override;
  if (tok.chatTemplate !== undefined) return tok.chatTemplate;
  throw new Error(`chat: the model's tokenizer (${tok.name}) has no chat template (no chat_template in tokenizer_config.json, no chat_template.jinja); give one with --template FILE`);
}

/** options of a ChatSession: reply length, sampling, seed, system message, template override */
export interface ChatOptions extends SamplingOptions {
  /** Reply length limit in tokens. */
  maxNewTokens: number;
  /** Sampling seed of the first reply; reply n uses seed + n. Default 0. */
  seed?: number;
  /** A system message opening the conversation. */
  system?: string;
  /** Jinja template overriding the tokenizer's (e.g. from --template FILE). */
  template?: string;
  /** Extra template variables. */
  templateVars?: Record<string, unknown>;
}

/** a generated reply with the prompt it continued and how many old messages were left out */
export interface ChatReply extends GenerateResult {
  /** The rendered prompt the reply continued. */
  prompt: string;
  /** Oldest user/assistant turns dropped so the prompt fits max_position_embeddings. */
  droppedTurns: number;
}

/** A multi-turn conversation with one model; each reply re-renders the whole history. */
export class ChatSession {
  readonly messages: ChatMessage[] = [];
  readonly template: string;
  private readonly compiled: Template;
  private readonly stopText?: string;
  private readonly stopIds: number[];
  private turns = 0;

  constructor(
    readonly model: LanguageModel,
    readonly tokenizer: Tokenizer,
    private readonly opts: ChatOptions,
  ) {
    this.template = resolveChatTemplate(tokenizer, opts.template);
    this.compiled = compileChatTemplate(this.template);
    this.stopIds = [...(tokenizer.special?.stopIds ?? [])];
    // a template without stop ids (and not the default) ends replies at maxNewTokens only
    if (this.template === DEFAULT_CHAT_TEMPLATE) this.stopText = DEFAULT_CHAT_STOP_TEXT;
    this.reset();
  }

  /** Forget the conversation (the system message stays); the seed keeps advancing, so a repeated question is sampled anew. */
  reset(): void {
    this.messages.length = 0;
    if (this.opts.system !== undefined) this.messages.push({ role: 'system', content: this.opts.system });
  }

  /** The prompt for the next reply (history + generation prompt). */
  render(messages: ChatMessage[] = this.messages): string {
    const sp = this.tokenizer.special;
    return renderChatTemplate(this.compiled, messages, { addGenerationPrompt: true, bosToken: sp?.bos?.content, eosToken: sp?.eos?.content, extra: this.opts.templateVars });
  }

  /** Add a user message, generate the assistant's reply (streamed to onText) and keep both. */
  send(user: string, onText?: (piece: string) => void): ChatReply {
    const maxPos = this.model.config.max_position_embeddings;
    const msgs = [...this.messages, { role: 'user', content: user }];
    let prompt = this.render(msgs);
    let dropped = 0;
    // leave room for the reply (up to half the context): drop the oldest exchanges while the prompt is too long
    const reserve = Math.max(1, Math.min(this.opts.maxNewTokens, Math.floor(maxPos / 2)));
    while (this.tokenizer.encode(prompt).length + reserve > maxPos) {
      const first = msgs.findIndex((m) => m.role !== 'system');
      if (first < 0 || first >= msgs.length - 1) break; // only the new user message is left
      const n = first + 2 < msgs.length && msgs[first + 1].role === 'assistant' ? 2 : 1;
      msgs.splice(first, n);
      dropped += n;
      prompt = this.render(msgs);
    }
    const r = generate(this.model, this.tokenizer, prompt, {
      maxNewTokens: this.opts.maxNewTokens,
      temperature: this.opts.temperature,
      topK: this.opts.topK,
      topP: this.opts.topP,
      seed: (this.opts.seed ?? 0) + this.turns,
      stopTokenIds: this.stopIds,
      ...(this.stopText !== undefined ? { stopOnText: this.stopText } : {}),
      onText,
    });
    this.turns++;
    // the full history is kept; dropping applies to each prompt only
    this.messages.push({ role: 'user', content: user }, { role: 'assistant', content: r.text });
    return { ...r, prompt, droppedTurns: dropped };
  }
}
