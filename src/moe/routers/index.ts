/**
 * Importing this module registers every router in routerRegistry (each router file registers
 * its spec on import). Add one import line per new router file.
 */
export * from './registry.js';
export * from './common.js';

import './topk.js';
import './switch.js';
import './expert-choice.js';
import './soft.js';
import './aux-free.js';
import './remoe.js';
import './top-p.js';
import './threshold.js';
import './null-experts.js';
import './hash.js';
import './dense-to-sparse.js';
import './group-limited.js';
import './biased-topk.js';
import './cosine.js';
import './adaptive-gating.js';
import './smoe-dropout.js';
import './dynmoe.js';
import './vqmoe.js';
import './base-layer.js';
import './mixture-of-tokens.js';
import './speechmoe.js';
import './da-moe.js';
import './moec.js';
import './output-masking.js';
import './stablemoe.js';
import './thor.js';
import './dselect-k.js';
import './competesmoe.js';
import './autonomy.js';
import './gw-moe.js';
import './maskmoe.js';
import './rmoe.js';
import './cartesian.js';
import './smile.js';
import './nested-budget.js';
import './phase-in.js';
import './sigma-moe.js';
