// Registry specs and the one validation format: every entry carries a summary, a paper and a
// strict option schema; errors name the field, the rule and the value; the model config reaches
// every registered loss; the HF-style coefficient fields stay aliases.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng } from '../../src/tensor/random.js';
import { formatIssues, z, describeShape, posInt, ConfigError } from '../../src/tensor/validate.js';
import { routerRegistry } from '../../src/moe/routers/index.js';
import { expertRegistry } from '../../src/moe/experts/index.js';
import { dispatchRegistry } from '../../src/moe/dispatch/index.js';
import { lossRegistry } from '../../src/moe/losses/index.js';
import { MoELayer } from '../../src/moe/layer.js';
import { parseModelConfig, parseRunConfig } from '../../src/models/config.js';
import { moeLayerConfig } from '../../src/models/transformer.js';

test('every registered entry has a summary, a paper with a year, and an option schema whose defaults parse', () => {
  for (const reg of [routerRegistry, expertRegistry, dispatchRegistry, lossRegistry] as const) {
    assert.ok(reg.names().length > 0, reg.kind);
    for (const s of reg.specs() as { name: string; summary: string; paper?: { year: number; title: string }; options?: Record<string, z.ZodType> }[]) {
      assert.ok(s.summary.length > 0 && !s.summary.includes('\n'), `${reg.kind} ${s.name}: one-line summary`);
      assert.ok(s.paper && s.paper.year > 1990 && s.paper.year < 2100 && s.paper.title.length > 0, `${reg.kind} ${s.name}: paper`);
      for (const d of describeShape(s.options ?? {})) {
        assert.ok(d.rule.length > 0, `${s.name}.${d.name} has a rule`);
        if ('default' in d) assert.equal(s.options![d.name].safeParse(undefined).success, true, `${s.name}.${d.name} default parses`);
      }
    }
  }
});

test('router options: defaults applied once, by the schema; unknown options and bad values named with the value', () => {
  const r = routerRegistry.get('top-p')({ type: 'top-p', dModel: 4, numExperts: 6, topK: 2 }, new Rng(0)) as unknown as { p: number; maxK: number; normalize: boolean };
  assert.deepEqual([r.p, r.maxK, r.normalize], [0.4, 6, false]);
  assert.throws(
    () => routerRegistry.get('top-p')({ type: 'top-p', dModel: 4, numExperts: 6, topK: 2, p: 2, maxK: 9 }, new Rng(0)),
    (e: Error) => e instanceof ConfigError && /^router "top-p": option p must be a number in \(0, 1\], got 2; option maxK must be an integer in \[1, numExperts=6\], got 9$/.test(e.message),
  );
});

test('the house format: field, rule, value; statements; unknown fields with the known ones', () => {
  const schema = z.object({ a: posInt(), b: z.object({ c: z.number() }).strict() }).strict();
  const input = { a: 0, b: { c: 'x', d: 1 }, e: 2 };
  const r = schema.safeParse(input);
  assert.equal(r.success, false);
  const msg = formatIssues(r.error!.issues, input, { where: 'thing', known: (p) => (p.length ? ['c'] : ['a', 'b']) });
  assert.equal(msg, 'thing: a must be a positive integer, got 0; b.c must be a number, got "x"; unknown b.d (known: c); unknown e (known: a, b)');
});

test('the layer accepts any registered expert type and dispatch, and rejects a bad dispatch option in the house format', () => {
  for (const type of expertRegistry.names()) {
    const layer = new MoELayer({ dModel: 4, numExperts: 2, topK: 1, experts: { type, dFF: 3 }, router: { type: 'topk' }, dispatch: { type: 'capacity', capacityFactor: 2 } }, new Rng(0));
    assert.equal(layer.specs.experts.name, type);
    assert.equal(layer.specs.dispatch.name, 'capacity');
  }
  assert.throws(
    () => new MoELayer({ dModel: 4, numExperts: 2, topK: 1, experts: { type: 'gelu', dFF: 3 }, router: { type: 'topk' }, dispatch: { type: 'dropless', capacityFactor: 2 } }),
    /MoELayer: unknown field config\.dispatch\.capacityFactor/,
  );
  // the router's own default dispatch (its spec trait) applies when the config names none
  const sw = new MoELayer({ dModel: 4, numExperts: 2, topK: 1, experts: { type: 'gelu', dFF: 3 }, router: { type: 'switch' } });
  assert.equal(sw.specs.dispatch.name, 'capacity');
});

test('the model config names any registered loss; the HF-style coefficient fields are aliases', () => {
  const base = { num_local_experts: 4, num_experts_per_tok: 2 };
  const d = moeLayerConfig(parseModelConfig(base));
  assert.deepEqual(d.losses, { switch: 0.01, zloss: 0.001 });
  for (const name of lossRegistry.names()) {
    const c = moeLayerConfig(parseModelConfig({ ...base, router_aux_loss_coef: 0, router_z_loss_coef: 0, router_losses: { [name]: 0.5 } }));
    assert.deepEqual(c.losses, { [name]: 0.5 }, name);
  }
  // router_losses overrides its alias for the same loss
  assert.equal(moeLayerConfig(parseModelConfig({ ...base, router_losses: { switch: 0.2 } })).losses!.switch, 0.2);
  assert.throws(() => parseRunConfig({ model: { router_losses: { balance: 1 } } }), /model\.router_losses\.balance: unknown loss "balance": expected one of .*switch/);
  assert.throws(() => parseRunConfig({ model: { router_losses: { load: -1 } } }), /model\.router_losses\.load: must be >= 0, got -1/);
  assert.throws(() => parseRunConfig({ model: { router_type: 'nope' } }), /model\.router_type: must be one of topk, .*, got "nope"/);
  assert.throws(() => parseRunConfig({ model: { dispatch: 'soft' } }), /model\.dispatch: must be one of dropless, capacity, got "soft"/);
});

test('HF-style fields reach the options the specs map them to', () => {
  const sw = moeLayerConfig(parseModelConfig({ router_type: 'switch', capacity_factor: 1.5 }));
  assert.equal(sw.router.capacityFactor, 1.5);
  const cap = moeLayerConfig(parseModelConfig({ dispatch: 'capacity' }));
  assert.deepEqual(cap.dispatch, { type: 'capacity', capacityFactor: 1.25 });
  const tk = moeLayerConfig(parseModelConfig({ norm_topk_prob: false }));
  assert.equal(tk.router.normalize, false);
  // an explicit router option wins over the HF field
  assert.equal(moeLayerConfig(parseModelConfig({ router_type: 'switch', capacity_factor: 1.5, router_options: { capacityFactor: 3 } })).router.capacityFactor, 3);
  assert.equal(moeLayerConfig(parseModelConfig({ hidden_act: 'gelu' })).experts.type, 'gelu');
});
