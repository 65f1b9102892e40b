/**
 * A tiny fixed-width table printer (no dependency): numbers right-aligned, text left-aligned,
 * missing values shown as "-". Widths count code points so "×" or "µ" do not skew columns.
 */

export type Cell = string | number | boolean | null | undefined;
export type Row = Record<string, unknown>;

export interface Column {
  key: string;
  header: string;
  align?: 'left' | 'right';
  /** Custom cell text; the default formats numbers with `formatNum`. */
  format?: (value: unknown, row: Row) => string;
}

export function textWidth(s: string): number {
  return [...s].length;
}

export function pad(s: string, width: number, align: 'left' | 'right'): string {
  const fill = ' '.repeat(Math.max(0, width - textWidth(s)));
  return align === 'right' ? fill + s : s + fill;
}

/** Three significant-ish digits without scientific notation for the ranges benchmarks produce. */
export function formatNum(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  if (a === 0) return '0';
  if (Number.isInteger(v) && a < 1e6) return String(v);
  if (a >= 100) return v.toFixed(0);
  if (a >= 10) return v.toFixed(1);
  if (a >= 1) return v.toFixed(2);
  if (a >= 0.01) return v.toFixed(3);
  return v.toPrecision(2);
}

export function formatCell(v: unknown): string {
  if (v === null || v === undefined || v === '') return '-';
  if (typeof v === 'number') return formatNum(v);
  return String(v);
}

function defaultAlign(col: Column, rows: readonly Row[]): 'left' | 'right' {
  if (col.align) return col.align;
  const vals = rows.map((r) => r[col.key]).filter((v) => v !== null && v !== undefined && v !== '');
  return vals.length > 0 && vals.every((v) => typeof v === 'number') ? 'right' : 'left';
}

/** Render rows as aligned text: header, a dashed rule, one line per row (no trailing spaces). */
export function formatTable(columns: readonly Column[], rows: readonly Row[]): string {
  if (columns.length === 0) throw new Error('formatTable: no columns');
  const cells = rows.map((r) => columns.map((c) => (c.format ? c.format(r[c.key], r) : formatCell(r[c.key]))));
  const widths = columns.map((c, i) => Math.max(textWidth(c.header), ...cells.map((line) => textWidth(line[i]))));
  const aligns = columns.map((c) => defaultAlign(c, rows));
  const render = (parts: string[]) =>
    parts
      .map((p, i) => pad(p, widths[i], aligns[i]))
      .join('  ')
      .replace(/\s+$/, '');
  const lines = [render(columns.map((c) => c.header)), render(widths.map((w) => '-'.repeat(w)))];
  for (const line of cells) lines.push(render(line));
  return lines.join('\n');
}
