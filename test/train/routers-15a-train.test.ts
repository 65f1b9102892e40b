// Every issue-15 router 1-10 trains through the run config; the two-pass consistency hook runs for THOR.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { train } from '../../src/train/trainer.js';
import type { StableMoERouter } from '../../src/moe/routers/stablemoe.js';
import { tinyConfig, tmpDir } from './helpers.js';

const ROUTERS = ['stablemoe', 'thor', 'dselect-k', 'competesmoe', 'autonomy', 'gw-moe', 'maskmoe', 'rmoe', 'cartesian', 'smile'];

for (const name of ROUTERS) {
  test(`${name} trains through the run config`, async () => {
    const dir = tmpDir(`r15-${name}`);
    const opts: Record<string, Record<string, unknown>> = { competesmoe: { competeProb: 0.5 }, maskmoe: { countSteps: 2 }, stablemoe: { switchStep: 2 } };
    const cfg = tinyConfig({
      model: { hidden_size: 16, num_hidden_layers: 2, intermediate_size: 32, moe_intermediate_size: 16, router_type: name, router_options: opts[name] ?? {} },
      training: { steps: 4, batch_size: 2, seq_len: 12, eval_interval: 1000, save_interval: 1000, eval_batches: 1 },
    });
    const steps: { loss: number; aux: Record<string, number> }[] = [];
    const r = await train({ config: cfg, outDir: path.join(dir, 'run'), events: { onStep: (m) => steps.push({ loss: m.loss, aux: m.aux }) } });
    assert.equal(steps.length, 4);
    assert.ok(steps.every((s) => Number.isFinite(s.loss)));
    assert.ok(Number.isFinite(r.finalEval.loss));
    if (name === 'thor')
      assert.ok(
        steps.every((s) => s.aux.consistency > 0),
        'two passes and a consistency loss every step',
      );
    else assert.equal(steps[0].aux.consistency, undefined);
    if (name === 'stablemoe') {
      for (const m of r.model.moeLayers()) assert.equal((m.router as StableMoERouter).stage2.data[0], 1, 'reached stage 2');
      assert.ok('stablemoe-distill' in steps[0].aux && !('stablemoe-distill' in steps[3].aux));
    }
  });
}

test('rmoe: inside the model each MoE layer after the first receives the previous layer’s routing state', async () => {
  const { MoETransformerLM } = await import('../../src/models/transformer.js');
  const { Rng } = await import('../../src/tensor/random.js');
  const cfg = tinyConfig({ model: { hidden_size: 16, num_hidden_layers: 3, intermediate_size: 32, moe_intermediate_size: 16, router_type: 'rmoe' } });
  const model = new MoETransformerLM(cfg.model, 1);
  const seen: boolean[] = [];
  for (const m of model.moeLayers()) {
    const route = m.router.route.bind(m.router);
    m.router.route = (x, ctx) => {
      seen.push(ctx.state?.has('rmoe') ?? false);
      return route(x, ctx);
    };
  }
  const ids = Int32Array.from({ length: 8 }, (_, i) => i + 3);
  model.forward(ids, 1, 8, { ctx: { training: false, step: 0, rng: new Rng(0) } });
  model.forward(ids, 1, 8, { ctx: { training: false, step: 0, rng: new Rng(0) } });
  // a fresh state per forward: the first layer starts from zeros each time
  assert.deepEqual(seen, [false, true, true, false, true, true]);
});

test('thor through TrainSession (the playground’s trainer): the same two passes and consistency loss as train()', async () => {
  const { TrainSession } = await import('../../src/train/session.js');
  const { loadCorpusSplits } = await import('../../src/data/corpus.js');
  const cfg = tinyConfig({
    model: { hidden_size: 16, num_hidden_layers: 2, intermediate_size: 32, moe_intermediate_size: 16, router_type: 'thor' },
    training: { steps: 3, batch_size: 2, seq_len: 12, eval_interval: 1000, save_interval: 1000, eval_batches: 1 },
  });
  const viaTrain: { loss: number; aux: Record<string, number> }[] = [];
  await train({ config: cfg, outDir: path.join(tmpDir('r15-thor-session'), 'run'), events: { onStep: (m) => viaTrain.push({ loss: m.loss, aux: m.aux }) } });
  const s = new TrainSession(cfg, [loadCorpusSplits('shakespeare').train]);
  const viaSession = [s.trainStep(), s.trainStep(), s.trainStep()];
  for (const [i, m] of viaSession.entries()) {
    assert.ok(m.aux.consistency > 0, `session step ${i + 1} has a consistency loss`);
    assert.ok(Math.abs(m.loss - viaTrain[i].loss) < 1e-6 * Math.max(1, Math.abs(viaTrain[i].loss)), `step ${i + 1}: session ${m.loss} vs train ${viaTrain[i].loss}`);
  }
});
