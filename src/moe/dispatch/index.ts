/** Dispatch strategies: how routed tokens reach the experts and come back. Importing this module registers every one. */
export * from './registry.js';
export * from './dropless.js';
export * from './capacity.js';
export * from './soft.js';
