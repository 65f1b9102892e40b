/**
 * What the numbers of a benchmark cannot show about a router: whether a token's routing depends
 * on the other tokens of its batch. Such routers train fine, but KV-cached generation routes one
 * token at a time and so does not reproduce the routing the model was trained with.
 */

const BATCH_DEPENDENT: Record<string, string> = {
  'expert-choice': 'each expert picks its top tokens among the whole batch, so a token\'s experts depend on the other tokens (and on future ones in causal LM training)',
  soft: 'every slot is a weighted mix of all tokens of the batch, so a token\'s output depends on the others',
};

export function isBatchDependent(router: string): boolean {
  return Object.prototype.hasOwnProperty.call(BATCH_DEPENDENT, router);
}

export function batchDependenceReason(router: string): string | undefined {
  return BATCH_DEPENDENT[router];
}
