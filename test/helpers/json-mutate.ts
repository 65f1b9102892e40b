/**
 * Seeded mutations of a JSON document for parser fuzzing: most replace, delete or duplicate one
 * node of the parsed tree (hostile values: wrong types, extremes, huge or control-character
 * strings, deep nesting), the rest damage the text itself (byte flips, truncation).
 */
import { Rng } from '../../src/tensor/random.js';

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

/** Stands for deeply nested arrays, spliced into the text (JSON.stringify itself would overflow). */
const DEEP = '\u0001deep\u0001';
const DEEP_TEXT = '['.repeat(20_000) + '1' + ']'.repeat(20_000);

const HOSTILE: (() => Json)[] = [
  () => null,
  () => true,
  () => 0,
  () => -1,
  () => 0.5,
  () => -0.5,
  () => 1e9,
  () => 2 ** 31,
  () => 2 ** 53 + 2,
  () => 1e308,
  () => -1e308,
  () => '',
  () => 'x',
  () => '\u0000\n\u001b[31m',
  () => 'a'.repeat(100_000),
  () => '(a+)+$',
  () => [],
  () => [null],
  () => Array.from({ length: 1000 }, (_, i) => i),
  () => ({}),
  () => ({ __proto__: { polluted: true } }) as unknown as Json,
  () => DEEP,
];

/** Every (container, key) pair in the tree, so one can be picked uniformly. */
function slots(v: Json, out: [Json[] | { [k: string]: Json }, string | number][] = [], depth = 0): typeof out {
  if (depth > 64 || v === null || typeof v !== 'object') return out;
  if (Array.isArray(v)) {
    // long arrays (vocabularies, merges): sample a few entries, not all
    const idx = v.length <= 16 ? v.map((_, i) => i) : [0, 1, v.length - 1, Math.floor(v.length / 2)];
    for (const i of idx) {
      out.push([v, i]);
      slots(v[i], out, depth + 1);
    }
  } else {
    const keys = Object.keys(v);
    const pick = keys.length <= 64 ? keys : [...keys.slice(0, 32), ...keys.slice(-8)];
    for (const k of pick) {
      out.push([v, k]);
      slots(v[k], out, depth + 1);
    }
  }
  return out;
}

/** One mutated document (text) from `text`, a valid JSON document. */
export function mutateJson(rng: Rng, text: string): string {
  const r = rng.next();
  if (r < 0.15) {
    // text damage: flips, or a cut
    const b = Buffer.from(text, 'utf8');
    if (rng.next() < 0.5) return b.subarray(0, Math.floor(rng.next() * b.length)).toString('utf8');
    const n = 1 + Math.floor(rng.next() * 4);
    for (let i = 0; i < n; i++) b[Math.floor(rng.next() * b.length)] ^= 1 << Math.floor(rng.next() * 8);
    return b.toString('latin1');
  }
  const root = JSON.parse(text) as Json;
  const n = 1 + Math.floor(rng.next() * 3);
  for (let i = 0; i < n; i++) {
    const all = slots(root);
    if (all.length === 0) break;
    const [obj, key] = all[Math.floor(rng.next() * all.length)];
    const op = rng.next();
    if (op < 0.7) (obj as Record<string | number, Json>)[key] = HOSTILE[Math.floor(rng.next() * HOSTILE.length)]();
    else if (op < 0.85) {
      if (Array.isArray(obj)) obj.splice(key as number, 1);
      else delete obj[key as string];
    } else if (Array.isArray(obj)) obj.push(obj[key as number]);
    else obj[`${String(key)}_`] = obj[key as string];
  }
  return JSON.stringify(root).split(JSON.stringify(DEEP)).join(DEEP_TEXT);
}

/** Assert `e` is a plain one-line error, not an internal TypeError/RangeError/SyntaxError escaping a parser. */
export function isCleanError(e: unknown): string | null {
  if (!(e instanceof Error)) return `threw a non-error ${String(e)}`;
  if (e instanceof TypeError || e instanceof RangeError || e instanceof SyntaxError || e instanceof ReferenceError) return `internal ${e.constructor.name}: ${e.message.slice(0, 300)}`;
  if (e.message.includes('\n')) return `error spans lines: ${e.message.slice(0, 300)}`;
  if (e.message.length > 4000) return `error of ${e.message.length} characters: ${e.message.slice(0, 600)}`;
  return null;
}
