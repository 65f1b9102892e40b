/** Dispatch strategies: how routed tokens reach the experts and come back. */
export * from './dropless.js';
export * from './capacity.js';
export * from './soft.js';

export type DispatchConfig = { type: 'dropless' } | { type: 'capacity'; capacityFactor: number; dropOrder?: import('./capacity.js').DropOrder };
