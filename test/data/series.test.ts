/** Time-series CSV loading: the embedded NOAA series, the time split, and one-line errors for malformed files. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseSeriesCsv, loadSeries, splitByTime, SERIES } from '../../src/data/series.js';

const parse = (text: string, extra: { dateColumn?: string; minValues?: number } = {}) => parseSeriesCsv(text, { column: 'v', source: 'x.csv', ...extra });

test('the embedded series: 1461 daily values of Seattle 2012-2015, dates increasing, split by time', () => {
  const s = loadSeries('seattle-weather');
  assert.equal(s.values.length, 1461);
  assert.equal(s.column, 'temp_max');
  assert.equal(s.dates![0], '2012-01-01');
  assert.equal(s.dates![1460], '2015-12-31');
  assert.equal(s.values[0], 12.8);
  assert.equal(s.period, 365);
  assert.match(SERIES['seattle-weather'].license, /public domain/);
  const t = loadSeries('seattle-weather', { column: 'temp_min' });
  assert.equal(t.values[0], 5);
  assert.equal(splitByTime(1461, 0.2), 1169);
  assert.throws(() => splitByTime(10, 1), /val_fraction must be in \(0, 1\)/);
});

test('CSV parsing: quoted fields, CRLF, BOM and trailing blank lines are fine', () => {
  const s = parse('\ufeffd,v,name\r\n2020-01-01,1.5,"a, b"\r\n2020-01-02,-2,"say ""hi"""\r\n\r\n', { dateColumn: 'd' });
  assert.deepEqual(Array.from(s.values), [1.5, -2]);
  assert.deepEqual(s.dates, ['2020-01-01', '2020-01-02']);
});

test('malformed series files get one-line errors naming the file, line and column', () => {
  const cases: [string, RegExp, { dateColumn?: string; minValues?: number }?][] = [
    ['', /series x\.csv: empty file/],
    ['a,b\n1,2\n', /no column "v" in the header \(columns: a, b\)/],
    ['v,w\n1,2\n3\n', /line 3: 1 fields, the header has 2/],
    ['v\n1\nabc\n', /line 3: column "v" must be a finite number, got "abc"/],
    ['v,w\n1,2\n,3\n', /line 3: column "v" must be a finite number, got ""/],
    ['v\n1\nInfinity\n', /line 3: column "v" must be a finite number/],
    ['v\n1\n', /1 values, need at least 2/],
    ['v,"w\n1,2\n', /line 1: unterminated quoted field/],
    ['d,v\n2020-01-02,1\n2020-01-01,2\n', /line 3: dates must increase, got 2020-01-01 after 2020-01-02/, { dateColumn: 'd' }],
    ['d,v\n2020-01-01,1\nsoon,2\n', /line 3: column "d" must be a date, got "soon"/, { dateColumn: 'd' }],
    ['d,v\n2020-01-01,1\n', /no date column "t"/, { dateColumn: 't' }],
  ];
  for (const [text, re, extra] of cases) {
    assert.throws(
      () => parse(text, extra),
      (e: Error) => re.test(e.message) && !e.message.includes('\n'),
      `${JSON.stringify(text)} -> ${re}`,
    );
  }
});

test('loadSeries: a CSV path, or a clear error for an unknown name, a directory or a missing column', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'moe-ts-series-'));
  try {
    const f = path.join(dir, 's.csv');
    fs.writeFileSync(f, 'v\n1\n2\n3\n');
    assert.deepEqual(Array.from(loadSeries(f, { column: 'v' }).values), [1, 2, 3]);
    assert.throws(() => loadSeries(f), /name the value column \(data\.column\)/);
    assert.throws(() => loadSeries('no-such-series'), /not an embedded series \(seattle-weather\) and no such file/);
    assert.throws(() => loadSeries(dir, { column: 'v' }), /series file .*(directory|not a regular file)/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
