// Fault injection: a crash (or a full disk) at every file-system operation of a checkpoint save,
// then a restart. The fs functions are wrapped on the builtin module itself
// (syncBuiltinESMExports makes every `import * as fs` see the wrappers), so the code under test
// is unchanged.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { createRequire, syncBuiltinESMExports } from 'node:module';
import { train } from '../../src/train/trainer.js';
import { loadCheckpoint, saveCheckpoint, type TrainerState } from '../../src/io/checkpoint.js';
import type { AdamWState } from '../../src/nn/optim.js';
import { tinyConfig, tmpDir } from '../train/helpers.js';

const fsMut = createRequire(import.meta.url)('node:fs') as Record<string, unknown>;
const realFs = fsMut as unknown as typeof import('node:fs');
const OPS = ['mkdirSync', 'rmSync', 'openSync', 'writeSync', 'fsyncSync', 'closeSync', 'renameSync', 'unlinkSync', 'readdirSync', 'existsSync', 'writeFileSync', 'cpSync'];

/**
 * Run fn with op number `at` (1-based) failing. mode 'kill': that op and every later one fail,
 * as if the process died there. mode 'enospc': only that op fails, with ENOSPC.
 * Returns the number of fs operations fn made.
 */
function withFault(at: number, mode: 'kill' | 'enospc', fn: () => void): { ops: number; threw: unknown } {
  const saved = OPS.map((n) => fsMut[n]);
  let count = 0;
  let dead = false;
  OPS.forEach((name, i) => {
    const orig = saved[i] as (...a: unknown[]) => unknown;
    fsMut[name] = (...args: unknown[]) => {
      count++;
      if (dead || count === at) {
        if (mode === 'kill') dead = true;
        const e = new Error(mode === 'kill' ? `injected crash at fs op ${count} (${name})` : `ENOSPC: no space left on device, ${name}`) as NodeJS.ErrnoException;
        e.code = mode === 'kill' ? 'EINJECTED' : 'ENOSPC';
        throw e;
      }
      return orig(...args);
    };
  });
  syncBuiltinESMExports();
  let threw: unknown = null;
  try {
    fn();
  } catch (e) {
    threw = e;
  } finally {
    OPS.forEach((name, i) => (fsMut[name] = saved[i]));
    syncBuiltinESMExports();
  }
  return { ops: count, threw };
}

function checkpointInput(dir: string): { state: TrainerState; model: never; optimizer: AdamWState } {
  const ck = loadCheckpoint(dir);
  return { state: ck.state, model: ck.model as never, optimizer: ck.optimizer! };
}

const tmpLeft = (dir: string): string[] => realFs.readdirSync(path.join(dir, 'checkpoints')).filter((n) => n.startsWith('.'));

test('a crash or ENOSPC at any fs operation of a save leaves a complete checkpoint; the next save recovers', async () => {
  const src = tmpDir('faults-src');
  await train({ config: tinyConfig({ training: { steps: 2, save_interval: 1, eval_interval: 100 } }), outDir: src });
  const prev = checkpointInput(path.join(src, 'checkpoints', 'step-00000001'));
  const next = checkpointInput(path.join(src, 'checkpoints', 'step-00000002'));
  // the run's previous checkpoint: an older step, or the same step (a repeated final save, issue 8 case 1)
  let base = prev;
  const fresh = (): string => {
    const d = tmpDir('faults');
    saveCheckpoint(d, base);
    return d;
  };
  const probe = fresh();
  const total = withFault(0, 'kill', () => saveCheckpoint(probe, next)).ops;
  assert.ok(total >= 15, `a save makes ${total} fs operations`);
  for (const [mode, b] of [
    ['kill', prev],
    ['enospc', prev],
    ['kill', next],
  ] as const) {
    base = b;
    for (let at = 1; at <= total; at++) {
      const dir = fresh();
      const r = withFault(at, mode, () => saveCheckpoint(dir, next));
      const where = `${mode} at op ${at}/${total} after step ${base.state.step}`;
      // after the restart: latest.json names a complete checkpoint, the old one or the new one
      const ck = loadCheckpoint(dir);
      assert.ok(ck.state.step === base.state.step || ck.state.step === 2, where);
      const want = ck.state.step === 1 ? prev : next;
      for (const [name, t] of want.model as unknown as Map<string, { data: Float32Array }>) assert.deepEqual(ck.model.get(name)!.data, t.data, `${where}: ${name}`);
      if (r.threw === null) assert.equal(ck.state.step, 2, `${where}: a save that returned is the latest`);
      if (mode === 'enospc') assert.deepEqual(tmpLeft(dir), [], `${where}: a failed save cleans up after itself`);
      if (r.threw !== null && mode === 'enospc') assert.match(String((r.threw as Error).message), /cannot save checkpoint of step 2.*latest\.json still names the previous complete checkpoint/, where);
      // the restarted process saves again: works, and clears what the dead one left behind
      saveCheckpoint(dir, next);
      assert.equal(loadCheckpoint(dir).state.step, 2, where);
      assert.deepEqual(tmpLeft(dir), [], `${where}: half-written directories are removed`);
    }
  }
});

test('a run killed during its final save resumes to the same result as an uninterrupted run', async () => {
  const cfg = tinyConfig({ training: { steps: 4, save_interval: 2, eval_interval: 2 } });
  const straight = await train({ config: cfg, outDir: tmpDir('faults-straight') });
  for (const frac of [0.2, 0.5, 0.9]) {
    const dir = tmpDir('faults-run');
    await train({ config: cfg, outDir: dir, stopAfter: 3 });
    // count the fs ops of the last step's save (plus the results write), then kill somewhere inside it
    const probe = tmpDir('faults-probe');
    await train({ config: cfg, outDir: probe, stopAfter: 3 });
    let p: Promise<unknown> = Promise.resolve();
    const total = withFault(0, 'kill', () => {
      p = train({ outDir: probe, resume: true });
    }).ops;
    await p;
    const at = Math.max(1, Math.floor(total * frac));
    let run: Promise<unknown> = Promise.resolve();
    withFault(at, 'kill', () => {
      run = train({ outDir: dir, resume: true }).catch(() => undefined);
    });
    await run;
    const ck = loadCheckpoint(dir);
    assert.ok(ck.state.step === 2 || ck.state.step === 4, `killed at op ${at}/${total}: step ${ck.state.step}`);
    const res = ck.state.step === 4 ? null : await train({ outDir: dir, resume: true });
    const final = loadCheckpoint(dir);
    assert.equal(final.state.step, 4);
    const want = straight.model.stateDict();
    for (const [name, t] of final.model) assert.deepEqual(t.data, want.get(name)!.data, `killed at op ${at}/${total}: ${name}`);
    if (res) assert.equal(res.finalEval.loss, straight.finalEval.loss);
  }
});
