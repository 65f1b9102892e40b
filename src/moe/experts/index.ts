/** Expert types; importing this module registers every one in expertRegistry. */
export * from './registry.js';
export * from './ffn.js';
export * from './clamped-swiglu.js';
export * from './nested.js';
export * from './mpo.js';
