// Adding a router is its own file, one registration line and its own test: a fixture router
// registered only here appears in `moe-ts routers`, passes the generated conformance suite, and
// is planned by `bench-routers --routers` (with its FLOP-matching trait applied), with no other
// file naming it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Tensor } from '../../src/tensor/tensor.js';
import type { Rng } from '../../src/tensor/random.js';
import { sigmoid } from '../../src/tensor/index.js';
import { positive } from '../../src/tensor/validate.js';
import { JsBackend } from '../../src/kernels/index.js';
import { Module } from '../../src/nn/module.js';
import type { Linear } from '../../src/nn/layers.js';
import { routerRegistry, defineRouter, routerGate, selectTopK, normalizeRows, checkRouterInput, type ParsedRouterConfig } from '../../src/moe/routers/index.js';
import type { Router, RouterContext, RouterOutput } from '../../src/moe/types.js';
import { buildProgram } from '../../src/cli/main.js';
import { planBenchmark, buildBenchConfig } from '../../src/bench-routers/run.js';
import { routerConformance } from '../moe/conformance.js';

const NAME = 'fixture-sigmoid-topk';

const options = { scale: positive().default(1.5).describe('multiplier on the normalised weights') };

/** Sigmoid affinities, top-k, weights = chosen affinities normalised per token times `scale`. */
class FixtureRouter extends Module implements Router {
  readonly numExperts: number;
  gate: Linear;
  constructor(
    readonly cfg: ParsedRouterConfig<typeof options>,
    rng: Rng,
  ) {
    super();
    this.numExperts = cfg.numExperts;
    this.gate = routerGate(cfg.dModel, cfg.numExperts, rng);
  }
  route(x: Tensor, _ctx: RouterContext): RouterOutput {
    checkRouterInput(NAME, x, this.cfg.dModel);
    const logits = this.gate.forward(x);
    const s = sigmoid(logits);
    const { routing } = selectTopK(s, this.cfg.topK, { normalize: true, factor: this.cfg.scale });
    return { logits, probs: normalizeRows(s), routing, losses: {}, metrics: {} };
  }
}

routerRegistry.register(
  defineRouter({
    name: NAME,
    summary: 'test fixture: sigmoid top-k with a weight scale',
    paper: { authors: 'Fixture et al.', title: 'A Router Registered Only in a Test', year: 2026 },
    options,
    traits: {
      routing: 'sparse',
      expertsPerToken: 'k',
      flopMatch: () => ({ options: { scale: 2 }, note: 'scale 2 for the fixture' }),
    },
    create: (cfg, rng) => new FixtureRouter(cfg, rng),
  }),
);

test('the fixture router appears in `moe-ts routers` with its options, defaults, paper and traits', async () => {
  const chunks: string[] = [];
  const write = process.stdout.write.bind(process.stdout);
  process.stdout.write = ((s: string | Uint8Array) => {
    chunks.push(String(s));
    return true;
  }) as typeof process.stdout.write;
  try {
    await buildProgram().exitOverride().parseAsync(['node', 'moe-ts', 'routers']);
  } finally {
    process.stdout.write = write;
  }
  const out = chunks.join('');
  const block = out.slice(out.indexOf(`  ${NAME}\n`));
  assert.ok(out.includes(`  ${NAME}\n`), 'listed');
  assert.match(block, /test fixture: sigmoid top-k with a weight scale/);
  assert.match(block, /paper: "A Router Registered Only in a Test", Fixture et al\. 2026/);
  assert.match(block, /traits: routing sparse; experts per token: k; FLOP-matched in bench-routers by its options/);
  assert.match(block, /scale = 1\.5: a positive finite number\. multiplier on the normalised weights/);
  // and every other registered router is listed too, from its spec
  for (const n of routerRegistry.names()) assert.ok(out.includes(`  ${n}\n`), n);
});

test('bench-routers --routers plans the fixture router, with its FLOP-matching options', () => {
  const { config } = buildBenchConfig({ quick: true, data: ['shakespeare'] });
  const plans = planBenchmark({ config, routers: ['topk', NAME] });
  assert.deepEqual(
    plans.map((p) => p.name),
    ['dense', 'topk', NAME],
  );
  const p = plans.find((x) => x.name === NAME)!;
  assert.equal(p.config.model.router_type, NAME);
  assert.deepEqual(p.config.model.router_options, { scale: 2 });
  assert.match(p.description, /\(Fixture et al\. 2026\) \[scale 2 for the fixture\]$/);
  // a user's own option wins over the FLOP-matching one
  const own = planBenchmark({ config, routers: [NAME], routerOptions: { [NAME]: { scale: 3 } } }).find((x) => x.name === NAME)!;
  assert.deepEqual(own.config.model.router_options, { scale: 3 });
  assert.ok(
    planBenchmark({ config }).some((x) => x.name === NAME),
    'the default plan lists every registered router',
  );
  assert.throws(
    () => planBenchmark({ config, routers: [NAME], routerOptions: { [NAME]: { scale: -1 } } }),
    new RegExp(`router "${NAME}" cannot be built with this config: router "${NAME}": option scale must be a positive finite number, got -1`),
  );
});

// the generated conformance suite, on the js backend
routerConformance([NAME], [{ name: 'js', make: async () => new JsBackend() }]);
