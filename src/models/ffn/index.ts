/** FFN kinds; importing this module registers PEER and Multilinear MoE in ffnRegistry. */
export * from './registry.js';
export * from './peer.js';
export * from './mumoe.js';
export * from './stratified.js';
export * from './cartesian.js';
