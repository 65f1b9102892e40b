/** The router registry: every router file registers a factory under its config name. */
import type { Rng } from '../../tensor/random.js';
import { Registry } from '../registry.js';
import type { Router } from '../types.js';

/** A router's config: the common fields plus router-specific options (validated by the router). */
export interface RouterConfig {
  type: string;
  dModel: number;
  /** Real (computing) experts. */
  numExperts: number;
  /** Experts per token for token-choice routers (capacity per expert derives from it for expert choice). */
  topK: number;
  [option: string]: unknown;
}

export type RouterFactory = (cfg: RouterConfig, rng: Rng) => Router;

export const routerRegistry = new Registry<RouterFactory>('router');

/** Read a numeric router option with a default, failing clearly on a wrong type or range. */
export function numOption(cfg: RouterConfig, name: string, def: number, check: (v: number) => boolean = Number.isFinite, rule = 'a finite number'): number {
  const v = cfg[name];
  if (v === undefined) return def;
  if (typeof v !== 'number' || !check(v)) throw new Error(`router "${cfg.type}": option ${name} must be ${rule}, got ${JSON.stringify(v)}`);
  return v;
}

/** Read a boolean router option with a default. */
export function boolOption(cfg: RouterConfig, name: string, def: boolean): boolean {
  const v = cfg[name];
  if (v === undefined) return def;
  if (typeof v !== 'boolean') throw new Error(`router "${cfg.type}": option ${name} must be true or false, got ${JSON.stringify(v)}`);
  return v;
}

/** Reject options this router does not know (catches typos in configs). */
export function checkKnownOptions(cfg: RouterConfig, known: readonly string[]): void {
  const base = ['type', 'dModel', 'numExperts', 'topK'];
  for (const k of Object.keys(cfg)) {
    if (!base.includes(k) && !known.includes(k)) {
      throw new Error(`router "${cfg.type}": unknown option "${k}"${known.length ? ` (known: ${known.join(', ')})` : ''}`);
    }
  }
}
