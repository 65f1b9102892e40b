/**
 * The chat template of moe-ts's own tokenizers (byte, BPE), which have no special tokens: each
 * message is `<|role|>\n` + content + `\n`, and the generation prompt is `<|assistant|>\n`. A reply
 * ends where the model starts the next role marker (DEFAULT_CHAT_STOP_TEXT).
 */
export const DEFAULT_CHAT_TEMPLATE =
  "{%- for message in messages %}{{ '<|' + message['role'] + '|>\\n' + message['content'] + '\\n' }}{%- endfor %}" +
  "{%- if add_generation_prompt %}{{ '<|assistant|>\\n' }}{%- endif %}";

/** Text that ends a reply under DEFAULT_CHAT_TEMPLATE (the start of the next role marker). */
export const DEFAULT_CHAT_STOP_TEXT = '\n<|';
