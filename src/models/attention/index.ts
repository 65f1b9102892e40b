/** Attention kinds; importing this module registers the attention-expert designs in attentionRegistry (standard and MLA register in transformer.ts). */
export * from './registry.js';
export * from './moa.js';
export * from './moh.js';
export * from './switchhead.js';
export * from './jetmoe.js';
export * from './mae.js';
export * from './bam.js';
