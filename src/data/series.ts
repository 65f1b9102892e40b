/**
 * Real-valued time series from CSV files (a header row, comma-separated, one observation per
 * line, ordered by time), for the Time-MoE forecaster. One embedded series ships with the package
 * (data/SOURCES.md): NOAA daily weather of Seattle 2012-2015, a U.S. Government work.
 * Every malformed input gets a one-line error naming the file, line and column.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { readRegularTextFileSync } from './files.js';
import { embeddedDataDir } from './corpus.js';

/** Errors of a series file: malformed CSV, a missing column, a non-number, too few values. */
export class SeriesError extends Error {}

/** A named series embedded in data/. */
export interface SeriesSpec {
  file: string;
  /** Column used when none is named. */
  column: string;
  /** Column holding the timestamps (ISO dates), checked to increase. */
  dateColumn: string;
  /** Season length in observations (seasonal-naive baseline). */
  period: number;
  description: string;
  source: string;
  license: string;
}

/** The embedded series, by name. */
export const SERIES: Readonly<Record<string, SeriesSpec>> = {
  'seattle-weather': {
    file: 'seattle-weather.csv',
    column: 'temp_max',
    dateColumn: 'date',
    period: 365,
    description: 'daily weather of Seattle, 2012-01-01 to 2015-12-31 (1461 days; temp_max/temp_min in °C, precipitation in mm, wind in m/s)',
    source: 'NOAA National Climatic Data Center, as kept in the npm package vega-datasets 3.2.1 (data/seattle-weather.csv)',
    license: 'public domain (U.S. Government work)',
  },
};

/** A loaded series: values in time order, with their timestamps when the file has a date column. */
export interface Series {
  name: string;
  column: string;
  values: Float64Array;
  dates: string[] | null;
  /** Season length when known (embedded series), else undefined. */
  period?: number;
}

/** The largest series file read (values beyond it would not fit a CPU forecaster's training anyway). */
export const MAX_SERIES_BYTES = 64 * 1024 * 1024;

/** Split one CSV line on commas; double-quoted fields may hold commas and "" escapes. */
function splitCsvLine(line: string, where: string): string[] {
  if (!line.includes('"')) return line.split(',');
  const out: string[] = [];
  let cur = '';
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (quoted) {
      if (c === '"' && line[i + 1] === '"') {
        cur += '"';
        i++;
      } else if (c === '"') quoted = false;
      else cur += c;
    } else if (c === '"') quoted = true;
    else if (c === ',') {
      out.push(cur);
      cur = '';
    } else cur += c;
  }
  if (quoted) throw new SeriesError(`${where}: unterminated quoted field`);
  out.push(cur);
  return out;
}

/**
 * Parse CSV text into one series: `column` names the value column (required), `dateColumn`
 * (optional) a timestamp column that must strictly increase. Empty lines at the end are ignored;
 * anywhere else a missing field, a non-finite number or a decreasing date is an error.
 */
export function parseSeriesCsv(text: string, opts: { column: string; dateColumn?: string; source?: string; minValues?: number }): Series {
  const src = opts.source ?? '<csv>';
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  const lines = text.split(/\r?\n/);
  while (lines.length > 0 && lines[lines.length - 1].trim() === '') lines.pop();
  if (lines.length === 0) throw new SeriesError(`series ${src}: empty file (expected a header line)`);
  const header = splitCsvLine(lines[0], `series ${src} line 1`).map((h) => h.trim());
  const col = header.indexOf(opts.column);
  if (col < 0) throw new SeriesError(`series ${src}: no column "${opts.column}" in the header (columns: ${header.join(', ')})`);
  const dcol = opts.dateColumn !== undefined ? header.indexOf(opts.dateColumn) : -1;
  if (opts.dateColumn !== undefined && dcol < 0) throw new SeriesError(`series ${src}: no date column "${opts.dateColumn}" in the header (columns: ${header.join(', ')})`);
  const values = new Float64Array(lines.length - 1);
  const dates: string[] | null = dcol >= 0 ? [] : null;
  let prevTime = -Infinity;
  for (let i = 1; i < lines.length; i++) {
    const where = `series ${src} line ${i + 1}`;
    const fields = splitCsvLine(lines[i], where);
    if (fields.length !== header.length) throw new SeriesError(`${where}: ${fields.length} fields, the header has ${header.length}`);
    const raw = fields[col].trim();
    // Number('') is 0: an empty field is a missing value, not zero
    const v = raw === '' ? NaN : Number(raw);
    if (!Number.isFinite(v)) throw new SeriesError(`${where}: column "${opts.column}" must be a finite number, got ${JSON.stringify(raw.slice(0, 40))}`);
    values[i - 1] = v;
    if (dates) {
      const d = fields[dcol].trim();
      const t = Date.parse(d);
      if (!Number.isFinite(t)) throw new SeriesError(`${where}: column "${opts.dateColumn}" must be a date, got ${JSON.stringify(d.slice(0, 40))}`);
      if (t <= prevTime) throw new SeriesError(`${where}: dates must increase, got ${d} after ${dates[dates.length - 1]}`);
      prevTime = t;
      dates.push(d);
    }
  }
  const min = opts.minValues ?? 2;
  if (values.length < min) throw new SeriesError(`series ${src}: ${values.length} values, need at least ${min}`);
  return { name: src, column: opts.column, values, dates };
}

/** Load a named embedded series ('seattle-weather') or a CSV file by path; `column` defaults to the named series' own. */
export function loadSeries(nameOrPath: string, opts: { column?: string; dateColumn?: string; minValues?: number } = {}): Series {
  const spec = Object.prototype.hasOwnProperty.call(SERIES, nameOrPath) ? SERIES[nameOrPath] : undefined;
  const file = spec ? path.join(embeddedDataDir(), spec.file) : nameOrPath;
  if (!spec && !fs.existsSync(file)) throw new SeriesError(`series "${nameOrPath}": not an embedded series (${Object.keys(SERIES).join(', ')}) and no such file`);
  const column = opts.column ?? spec?.column;
  if (!column) throw new SeriesError(`series ${file}: name the value column (data.column)`);
  let text: string;
  try {
    text = readRegularTextFileSync(file, { what: 'series file', maxBytes: MAX_SERIES_BYTES });
  } catch (e) {
    throw new SeriesError((e as Error).message);
  }
  const s = parseSeriesCsv(text, { column, dateColumn: opts.dateColumn ?? spec?.dateColumn, source: spec ? nameOrPath : file, minValues: opts.minValues });
  return { ...s, ...(spec ? { period: spec.period } : {}) };
}

/** Split by time: the first 1 - valFraction of the values train, the rest validate (index of the first validation value). */
export function splitByTime(n: number, valFraction: number): number {
  if (!(valFraction > 0 && valFraction < 1)) throw new SeriesError(`splitByTime: val_fraction must be in (0, 1), got ${valFraction}`);
  return Math.round(n * (1 - valFraction));
}
