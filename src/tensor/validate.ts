/**
 * The one validation language of moe-ts: zod schemas whose error messages are rules ("must be a
 * positive integer"), and one error format for every issue, from a router option up to the run
 * config: `<where>: <field> <rule>, got <value>` (issues joined by '; '). Unknown fields read
 * `<where>: unknown <field>`. The rule text doubles as the option's documentation (`moe-ts routers`).
 */
import { z } from 'zod';

export { z };

/** A JSON object (not null, not an array): the one guard for hand-read external formats (tokenizer.json, HF configs) on hot paths where a schema parse would cost. */
export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Errors of user-supplied configuration (config files, layer/router options, flags). */
export class ConfigError extends Error {}

// keyed by the schema definition, which .describe()/.meta() clones share
const RULES = new WeakMap<object, string>();
const defOf = (s: z.ZodType): object => (s as unknown as { _zod: { def: object } })._zod.def;

/** A number schema with a rule: `ok` decides, the rule is the message and the documentation. */
export function num(rule: string, ok: (v: number) => boolean = () => true) {
  const error = `must be ${rule}`;
  const s = z.number({ error }).refine(ok, { error });
  RULES.set(defOf(s), rule);
  return s;
}

export const posInt = (rule = 'a positive integer') => num(rule, (v) => Number.isInteger(v) && v >= 1);
export const nonNegInt = (rule = 'an integer >= 0') => num(rule, (v) => Number.isInteger(v) && v >= 0);
export const positive = (rule = 'a positive finite number') => num(rule, (v) => v > 0);
export const nonNegative = (rule = 'a finite number >= 0') => num(rule, (v) => v >= 0);

export function bool() {
  const s = z.boolean({ error: 'must be true or false' });
  RULES.set(defOf(s), 'true or false');
  return s;
}

/** What `moe-ts routers` prints about one option: its rule, default and description. */
export interface OptionDoc {
  name: string;
  rule: string;
  /** The default, when the schema has one (absent: required, or a default computed from other fields). */
  default?: unknown;
  optional: boolean;
  description: string;
}

/** Describe each field of a zod object shape (unwrapping defaults and optionals). */
export function describeShape(shape: Record<string, z.ZodType>): OptionDoc[] {
  return Object.entries(shape).map(([name, schema]) => {
    let s: z.ZodType = schema;
    let description = schema.description ?? '';
    let def: unknown;
    let hasDefault = false;
    let optional = false;
    for (;;) {
      const d = (s as unknown as { _zod: { def: { type: string; innerType?: z.ZodType; defaultValue?: unknown } } })._zod.def;
      if (d.type === 'default' && d.innerType) {
        hasDefault = true;
        def = d.defaultValue;
        s = d.innerType;
      } else if (d.type === 'optional' && d.innerType) {
        optional = true;
        s = d.innerType;
      } else break;
      description ||= s.description ?? '';
    }
    const rule = RULES.get(defOf(s)) ?? (s as unknown as { _zod: { def: { type: string } } })._zod.def.type;
    return { name, rule, ...(hasDefault ? { default: def } : {}), optional: optional || hasDefault, description };
  });
}

type Path = readonly PropertyKey[];

/** a.b[2].c */
export function pathString(path: Path): string {
  let s = '';
  for (const p of path) s += typeof p === 'number' ? `[${p}]` : s ? `.${String(p)}` : String(p);
  return s;
}

/** A value for an error message: JSON, cut short; undefined and non-finite numbers by name. */
export function showValue(v: unknown): string {
  if (v === undefined) return 'undefined';
  if (typeof v === 'number' && !Number.isFinite(v)) return String(v);
  let s: string;
  try {
    s = JSON.stringify(v) ?? String(v);
  } catch {
    s = String(v);
  }
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

function valueAt(input: unknown, path: Path): unknown {
  let v = input;
  for (const p of path) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<PropertyKey, unknown>)[p];
  }
  return v;
}

const ARTICLE: Record<string, string> = { object: 'an object', array: 'an array', int: 'an integer', boolean: 'true or false', undefined: 'absent' };

/** zod's own (capitalised) messages, rewritten as rules in the house style. */
function ruleOf(issue: z.core.$ZodIssue): string {
  if (/^[a-z]/.test(issue.message)) return issue.message;
  const i = issue as z.core.$ZodIssue & { expected?: string; minimum?: number | bigint; maximum?: number | bigint; inclusive?: boolean; values?: unknown[]; origin?: string };
  switch (issue.code) {
    case 'invalid_type':
      return `must be ${ARTICLE[i.expected ?? ''] ?? `a ${i.expected}`}`;
    case 'too_small':
      if (i.origin === 'array' || i.origin === 'string') return `must have at least ${i.minimum} ${i.origin === 'array' ? 'entries' : 'characters'}`;
      return `must be ${i.inclusive ? '>=' : '>'} ${i.minimum}`;
    case 'too_big':
      if (i.origin === 'array' || i.origin === 'string') return `must have at most ${i.maximum} ${i.origin === 'array' ? 'entries' : 'characters'}`;
      return `must be ${i.inclusive ? '<=' : '<'} ${i.maximum}`;
    case 'invalid_value':
      return `must be one of ${(i.values ?? []).map((v) => showValue(v)).join(', ')}`;
    case 'invalid_union':
      return 'must match one of the allowed forms';
    default:
      return `is invalid (${issue.message})`;
  }
}

export interface IssueFormat {
  /** What is being validated: 'router "topk"', 'MoELayer', 'invalid config cfg.json'. */
  where: string;
  /** How a field is named (default: its dotted path; '(root)' for the value itself). */
  label?: (path: Path) => string;
  /** Between the field and its rule: ' ' (default) or ': '. */
  sep?: string;
  /** The line for an unknown field (default: `unknown <label>`). */
  unknown?: (path: Path) => string;
  /** The known fields of the object at a path, listed after an unknown one. */
  known?: (path: Path) => readonly string[] | undefined;
}

/**
 * Custom issues that are whole statements rather than a rule about the value
 * (`params: { statement: true }`): printed as `<field>: <message>` without the value.
 */
export function statement(message: string): { message: string; params: { statement: true } } {
  return { message, params: { statement: true } };
}

/** Every issue as one line in the house format (see the file comment). */
export function formatIssues(issues: readonly z.core.$ZodIssue[], input: unknown, f: IssueFormat): string {
  const label = f.label ?? ((p: Path) => (p.length ? pathString(p) : '(root)'));
  const sep = f.sep ?? ' ';
  const lines: string[] = [];
  for (const issue of issues) {
    if (issue.code === 'unrecognized_keys') {
      const known = f.known?.(issue.path);
      for (const k of issue.keys) {
        const p = [...issue.path, k];
        lines.push(`${f.unknown ? f.unknown(p) : `unknown ${label(p)}`}${known?.length ? ` (known: ${known.join(', ')})` : ''}`);
      }
    } else if ((issue as { params?: { statement?: boolean } }).params?.statement) {
      lines.push(`${label(issue.path)}: ${issue.message}`);
    } else {
      lines.push(`${label(issue.path)}${sep}${ruleOf(issue)}, got ${showValue(valueAt(input, issue.path))}`);
    }
  }
  return `${f.where}: ${lines.join('; ')}`;
}

/** Parse or throw a ConfigError in the house format. */
export function parseOrThrow<T extends z.ZodType>(schema: T, value: unknown, f: IssueFormat): z.output<T> {
  const r = schema.safeParse(value);
  if (!r.success) throw new ConfigError(formatIssues(r.error.issues, value, f));
  return r.data;
}

/** The field names of the zod object (or wrapped object) at a path of a schema, for "known: ..." lists. */
export function knownKeys(schema: z.ZodType, path: Path): string[] | undefined {
  let s: z.ZodType | undefined = schema;
  const unwrap = (x: z.ZodType): z.ZodType => {
    for (;;) {
      const d = (x as unknown as { _zod: { def: { type: string; innerType?: z.ZodType; in?: z.ZodType } } })._zod.def;
      if ((d.type === 'default' || d.type === 'optional' || d.type === 'nullable' || d.type === 'prefault') && d.innerType) x = d.innerType;
      else if (d.type === 'pipe' && d.in) x = d.in;
      else return x;
    }
  };
  for (const p of [...path, null]) {
    if (!s) return undefined;
    s = unwrap(s);
    const shape = (s as unknown as { shape?: Record<string, z.ZodType> }).shape;
    if (p === null) return shape ? Object.keys(shape) : undefined;
    if (!shape || typeof p !== 'string') return undefined;
    s = shape[p];
  }
  return undefined;
}

/** 'a', 'a or b', 'a, b or c'. */
export function orList(xs: readonly string[]): string {
  return xs.length <= 1 ? (xs[0] ?? '(none)') : `${xs.slice(0, -1).join(', ')} or ${xs[xs.length - 1]}`;
}

/** Check one value (a constructor argument): `<where>: <field> <rule>, got <value>`. */
export function checkValue<T extends z.ZodType>(schema: T, value: unknown, where: string, field: string): z.output<T> {
  return parseOrThrow(schema, value, { where, label: (p) => (p.length ? `${field}.${pathString(p)}` : field) });
}

/**
 * `text` safe for a one-line error message: control characters (newlines, escapes) written as
 * \n / \xNN, and cut to `max` characters (JSON.parse messages quote the offending file text).
 */
export function oneLine(text: string, max = 400): string {
  // eslint-disable-next-line no-control-regex -- control characters are what this removes
  const s = text.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, (c) => (c === '\n' ? '\\n' : c === '\t' ? '\\t' : c === '\r' ? '\\r' : `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`));
  return s.length > max ? `${s.slice(0, max)}...` : s;
}

/** Deepest nesting a JSON document from a file may have (configs, tokenizers, checkpoint state need under 10). */
export const MAX_JSON_DEPTH = 64;

/**
 * Throw ConfigError when parsed JSON nests deeper than `max` (checked iteratively, so the check
 * cannot itself overflow the stack); the recursive validators after it then cannot either.
 */
export function checkJsonDepth(value: unknown, where: string, max = MAX_JSON_DEPTH): void {
  const stack: [unknown, number][] = [[value, 0]];
  while (stack.length > 0) {
    const [v, d] = stack.pop()!;
    if (v === null || typeof v !== 'object') continue;
    if (d >= max) throw new ConfigError(`${where}: nested more than ${max} levels deep`);
    for (const x of Array.isArray(v) ? v : Object.values(v)) if (x !== null && typeof x === 'object') stack.push([x, d + 1]);
  }
}
