/**
 * What the numbers of a benchmark cannot show about a router, read from its registered spec
 * (src/moe/routers/registry.ts, RouterTraits): whether a token's routing depends on the other
 * tokens of its batch, its routing kind, and why its per-domain usage may be uninformative.
 * Runs name their router by `model.router_type`; an unregistered one has no traits.
 */
import { routerRegistry, type RouterTraits } from '../moe/routers/index.js';

export function routerTraits(routerType: unknown): RouterTraits | undefined {
  return typeof routerType === 'string' ? routerRegistry.find(routerType)?.traits : undefined;
}

export function isBatchDependent(routerType: unknown): boolean {
  return routerTraits(routerType)?.batchDependent !== undefined;
}

export function batchDependenceReason(routerType: unknown): string | undefined {
  return routerTraits(routerType)?.batchDependent;
}

export function usageCaveat(routerType: unknown): string | undefined {
  return routerTraits(routerType)?.usageCaveat;
}
