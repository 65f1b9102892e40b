/**
 * The per-token routing view of `generate --show-routing` and `eval --trace`: the text once per
 * MoE layer with each token coloured by its top expert, then one row per token with every
 * expert and weight. Colour only on a terminal (and never with NO_COLOR); the JSON form carries
 * the same records.
 */
import type { TokenRouting } from '../infer/generate.js';

/** ANSI 256-colour backgrounds, far apart in hue; experts beyond them reuse the cycle. */
const BG = [33, 208, 160, 37, 70, 220, 134, 211, 94, 250, 44, 130, 27, 202, 125, 29];

/** Visible form of a token's text: control characters escaped, so a newline token does not break the row. */
export function visible(text: string): string {
  // eslint-disable-next-line no-control-regex -- control characters are what this matches
  return text.replace(/[\u0000-\u001f\u007f]/g, (c) => (c === '\n' ? '\\n' : c === '\t' ? '\\t' : c === '\r' ? '\\r' : `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`));
}

function paint(s: string, expert: number | undefined, color: boolean): string {
  if (!color || expert === undefined) return s;
  const bg = BG[expert % BG.length];
  // dark text on the light colours, white on the dark ones
  const fg = [220, 250, 211, 44, 208].includes(bg) ? 16 : 231;
  return `\x1b[48;5;${bg}m\x1b[38;5;${fg}m${s}\x1b[0m`;
}

export function useColor(stream: { isTTY?: boolean }): boolean {
  return Boolean(stream.isTTY) && !process.env.NO_COLOR;
}

export function formatRouting(tokens: readonly TokenRouting[], opts: { color: boolean; numExperts: number; title?: string }): string {
  const layers = [...new Set(tokens.flatMap((t) => t.layers.map((l) => l.layer)))].sort((a, b) => a - b);
  const lines: string[] = [];
  if (opts.title) lines.push(opts.title);
  if (!layers.length) return [...lines, 'routing: the model has no MoE layers (dense), nothing to show', ''].join('\n');
  const legend = Array.from({ length: opts.numExperts }, (_, e) => paint(` ${e} `, e, opts.color)).join('');
  if (opts.color) lines.push(`experts: ${legend}`);
  // without colour the coloured text lines say nothing; the table below carries everything
  for (const L of opts.color ? layers : []) {
    const text = tokens.map((t) => paint(visible(t.text), t.layers.find((l) => l.layer === L)?.experts[0], opts.color)).join('');
    lines.push(`layer ${L} (colour = top expert): ${text}`);
  }
  lines.push('');
  const w = Math.max(5, ...tokens.map((t) => visible(t.text).length + 2));
  lines.push(`${'pos'.padStart(4)}  ${'token'.padEnd(w)}  ${layers.map((L) => `layer ${L}: expert(weight)`.padEnd(28)).join('')}`);
  tokens.forEach((t, i) => {
    const cells = layers.map((L) => {
      const l = t.layers.find((x) => x.layer === L);
      if (!l) return '—'.padEnd(28);
      const s = l.experts.map((e, j) => `${e}(${l.weights[j].toFixed(2)})`).join(' ');
      return (l.experts.length ? s : 'none').padEnd(28);
    });
    const first = t.layers.find((l) => l.layer === layers[0])?.experts[0];
    lines.push(`${String(i).padStart(4)}  ${paint(visible(t.text).padEnd(w), first, opts.color)}  ${cells.join('')}${t.prompt ? ' prompt' : ''}`.trimEnd());
  });
  return lines.join('\n') + '\n';
}
