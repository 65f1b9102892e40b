// Rows already written by the resumable run scripts (train-bench-runs, scaling-runs, train-sweep): one JSON per line.
import * as fs from 'node:fs';

/** The rows of a JSON-lines file, [] when it does not exist yet. */
export function readJsonl(file) {
  if (!fs.existsSync(file)) return [];
  return fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l));
}
