/** Balancing / stability losses; importing this module registers every one in lossRegistry. */
export { lossRegistry, cvSquared, zeroLoss } from './registry.js';
export { switchLoss } from './switch.js';
export { importanceLoss } from './importance.js';
export { loadLoss, smoothLoadProbs, normalCdf } from './load.js';
export { zLoss } from './zloss.js';
export { localEntropyLoss, globalEntropyLoss, rowEntropy } from './entropy.js';
export { l1SparsityLoss, meanImportanceLoss } from './speechmoe.js';
export { moduleFormerMILoss, loadConcentrationLoss } from './moduleformer.js';
