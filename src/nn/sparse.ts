/**
 * Row-sparse parameters: a [rows, width] table of which one step touches only a few rows (PEER's
 * million single-neuron experts). Their gradient is kept as the touched rows and their values
 * (`rowGrad`), never as a dense [rows, width] array, so backward, gradient clipping and the
 * optimizer step cost O(touched rows) instead of O(rows).
 */
import { Parameter } from './module.js';

/** The gradient of a row-sparse parameter, unique row indices and their gradient rows (rows.length x width). */
export interface RowGrad {
  rows: Int32Array;
  values: Float32Array;
}

/** A [rows, width] parameter whose gradient arrives as touched rows (rowGrad) instead of `.grad`. */
export class RowSparseParameter extends Parameter {
  /** Floats per row. */
  readonly width: number;
  /** The accumulated row gradient since the last zeroGrad (null: no gradient). */
  rowGrad: RowGrad | null = null;
  constructor(data: Float32Array, shape: readonly number[]) {
    super(data, shape);
    if (shape.length !== 2) throw new Error(`RowSparseParameter: shape must be [rows, width], got [${shape.join(', ')}]`);
    this.width = shape[1];
  }
}

/**
 * Add a row gradient (rows unique within the call) into p.rowGrad; takes ownership of the arrays.
 * A second call in the same step (two backward passes) merges by row.
 */
export function accumulateRowGrad(p: RowSparseParameter, rows: Int32Array, values: Float32Array): void {
  const w = p.width;
  if (values.length !== rows.length * w) throw new Error(`accumulateRowGrad: ${values.length} values for ${rows.length} rows of width ${w}`);
  if (!p.rowGrad) {
    p.rowGrad = { rows, values };
    return;
  }
  const old = p.rowGrad;
  const slot = new Map<number, number>();
  old.rows.forEach((r, i) => slot.set(r, i));
  const extra: number[] = [];
  rows.forEach((r, i) => {
    if (!slot.has(r)) {
      slot.set(r, old.rows.length + extra.length);
      extra.push(i);
    }
  });
  const n = old.rows.length + extra.length;
  const outRows = new Int32Array(n);
  outRows.set(old.rows);
  const out = new Float32Array(n * w);
  out.set(old.values);
  extra.forEach((i, j) => (outRows[old.rows.length + j] = rows[i]));
  rows.forEach((r, i) => {
    const o = slot.get(r)! * w;
    for (let c = 0; c < w; c++) out[o + c] += values[i * w + c];
  });
  p.rowGrad = { rows: outRows, values: out };
}

/** The dense [rows, width] gradient of a row-sparse parameter (tests, analysis; O(rows)). */
export function denseRowGrad(p: RowSparseParameter): Float32Array {
  const g = new Float32Array(p.size);
  const rg = p.rowGrad;
  if (rg) rg.rows.forEach((r, i) => g.set(rg.values.subarray(i * p.width, (i + 1) * p.width), r * p.width));
  return g;
}
