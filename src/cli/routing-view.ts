/**
 * The per-token routing view of `generate --show-routing` and `eval --trace`: the text once per
 * MoE layer with each token coloured by its top expert, then one row per token with every
 * expert and weight, after the number of experts the token actually used. Colour only on a terminal (and never with NO_COLOR); the JSON form carries
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

type LayerCell = TokenRouting['layers'][number];
const keyOf = (l: Pick<LayerCell, 'layer' | 'sub'>): string => (l.sub === undefined ? `${l.layer}` : `${l.layer}.${'abcdefghijklmnopqrstuvwxyz'[l.sub] ?? l.sub}`);

/** One table cell: the number of experts the token actually used, then each expert(weight), then any capacity-dropped ones. */
export function routingCell(l: LayerCell): string {
  const used = l.experts.map((e, j) => `${e}(${l.weights[j].toFixed(2)})`).join(' ');
  const dropped = l.dropped?.length ? ` dropped ${l.dropped.join(',')}` : '';
  return `${l.experts.length}: ${l.experts.length ? used : 'none'}${dropped}`;
}

export function formatRouting(tokens: readonly TokenRouting[], opts: { color: boolean; numExperts: number; title?: string }): string {
  // one column per MoE layer, or per sub-layer where a layer has several (CartesianMoE: 0.a, 0.b)
  const cols = new Map<string, { layer: number; sub?: number }>();
  for (const t of tokens) for (const l of t.layers) cols.set(keyOf(l), { layer: l.layer, ...(l.sub === undefined ? {} : { sub: l.sub }) });
  const layers = [...cols.entries()].sort((a, b) => a[1].layer - b[1].layer || (a[1].sub ?? 0) - (b[1].sub ?? 0)).map(([k]) => k);
  const cellOf = (t: TokenRouting, k: string) => t.layers.find((l) => keyOf(l) === k);
  const lines: string[] = [];
  if (opts.title) lines.push(opts.title);
  if (!layers.length) return [...lines, 'routing: the model has no MoE layers (dense), nothing to show', ''].join('\n');
  const legend = Array.from({ length: opts.numExperts }, (_, e) => paint(` ${e} `, e, opts.color)).join('');
  if (opts.color) lines.push(`experts: ${legend}`);
  // without colour the coloured text lines say nothing; the table below carries everything
  for (const L of opts.color ? layers : []) {
    const text = tokens.map((t) => paint(visible(t.text), cellOf(t, L)?.experts[0], opts.color)).join('');
    lines.push(`layer ${L} (colour = top expert): ${text}`);
  }
  lines.push('');
  const w = Math.max(5, ...tokens.map((t) => visible(t.text).length + 2));
  const head = layers.map((L) => `layer ${L}: n: expert(weight)`);
  const widths = layers.map((L, i) => Math.max(28, head[i].length + 2, ...tokens.map((t) => (cellOf(t, L) ? routingCell(cellOf(t, L)!).length + 2 : 0))));
  lines.push(`${'pos'.padStart(4)}  ${'token'.padEnd(w)}  ${head.map((h, i) => h.padEnd(widths[i])).join('')}`);
  tokens.forEach((t, i) => {
    const cells = layers.map((L, c) => {
      const l = cellOf(t, L);
      return (l ? routingCell(l) : '—').padEnd(widths[c]);
    });
    const first = cellOf(t, layers[0])?.experts[0];
    lines.push(`${String(i).padStart(4)}  ${paint(visible(t.text).padEnd(w), first, opts.color)}  ${cells.join('')}${t.prompt ? ' prompt' : ''}`.trimEnd());
  });
  lines.push('', 'n = routed experts that computed on the token (null experts, masked tokens and capacity drops count nothing; shared experts, on every token, are not listed)');
  return lines.join('\n') + '\n';
}
