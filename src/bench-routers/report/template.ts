/**
 * HTML escaped by construction: the `html` tagged template escapes every interpolated value
 * unless it is already SafeHtml (the result of another `html` template, or `raw()` for markup
 * this program generated itself, such as ECharts' SVG). Report code never concatenates strings
 * into markup, so a router name, an error message or a domain read back from a reused
 * bench.json cannot inject tags or break out of an attribute.
 */

export class SafeHtml {
  constructor(readonly value: string) {}
  toString(): string {
    return this.value;
  }
}

const ESC: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;', '`': '&#96;' };

/** Escape text for HTML element content and quoted attribute values. */
export function escapeHtml(s: string): string {
  return s.replace(/[&<>"'`]/g, (c) => ESC[c]);
}

/** Mark a string as trusted markup. Only for markup this program generated (never for data). */
export function raw(s: string): SafeHtml {
  return new SafeHtml(s);
}

/** One interpolated value: SafeHtml as is, arrays item by item, null/undefined/false as nothing, anything else escaped text. */
function part(v: unknown): string {
  if (v instanceof SafeHtml) return v.value;
  if (Array.isArray(v)) return v.map(part).join('');
  if (v === null || v === undefined || v === false) return '';
  return escapeHtml(String(v));
}

export function html(strings: TemplateStringsArray, ...values: unknown[]): SafeHtml {
  let out = strings[0];
  for (let i = 0; i < values.length; i++) out += part(values[i]) + strings[i + 1];
  return new SafeHtml(out);
}

/** Join escaped parts with a (trusted) separator. */
export function join(items: readonly unknown[], sep: string): SafeHtml {
  return new SafeHtml(items.map(part).join(sep));
}

/** A JSON island (<script type="application/json">): `<` is written as \u003c so no text can close the script element. */
export function jsonScript(id: string, value: unknown): SafeHtml {
  const json = JSON.stringify(value)
    .replace(/</g, '\\u003c')
    .replace(/\u2028/g, '\\u2028')
    .replace(/\u2029/g, '\\u2029');
  return html`<script id="${id}" type="application/json">${raw(json)}</script>`;
}

/** Escape, then turn **x** into <strong>x</strong> (the recommendation's only markup). */
export function richText(s: string): SafeHtml {
  return raw(escapeHtml(s).replace(/\*\*(.+?)\*\*/g, '<strong>$1</strong>'));
}
