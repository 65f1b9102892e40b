// The conformance suites over every registered router, expert type and dispatch, on every
// backend that loads here (see conformance.ts for the contract).
import { routerRegistry } from '../../src/moe/routers/index.js';
import { expertRegistry } from '../../src/moe/experts/index.js';
import { dispatchRegistry } from '../../src/moe/dispatch/index.js';
import { availableBackends, routerConformance, expertConformance, dispatchConformance } from './conformance.js';

const backends = await availableBackends();
routerConformance(routerRegistry.names(), backends);
expertConformance(expertRegistry.names(), backends);
dispatchConformance(dispatchRegistry.names(), backends);
