// Per-token routing traces: extraction from routing records (sparse and soft), traces recorded
// during KV-cached generation against one full forward over the same tokens, the terminal view
// and the CLI flags (generate --show-routing [--json], eval --trace).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { noGrad, tensor } from '../../src/index.js';
import { Rng } from '../../src/tensor/random.js';
import { MoETransformerLM } from '../../src/models/transformer.js';
import { parseModelConfig } from '../../src/models/config.js';
import { ByteTokenizer } from '../../src/data/tokenizer/index.js';
import { generate } from '../../src/infer/index.js';
import { tokenExperts, type MoEAux } from '../../src/moe/index.js';
import { formatRouting, visible } from '../../src/cli/routing-view.js';
import { tmpDir } from '../train/helpers.js';

function aux(routing: MoEAux['router']['routing']): MoEAux {
  return { losses: {}, metrics: {} as MoEAux['metrics'], router: { logits: tensor(new Float32Array(1), [1]), probs: tensor(new Float32Array(1), [1]), routing, losses: {}, metrics: {} } };
}

test('tokenExperts groups sparse assignments per token, highest weight first', () => {
  const r = tokenExperts(
    aux({ kind: 'sparse', tokenIdx: Int32Array.from([0, 0, 1, 2, 2, 2]), expertIdx: Int32Array.from([3, 1, 2, 0, 1, 2]), weights: tensor(Float32Array.from([0.3, 0.7, 1, 0.2, 0.5, 0.3]), [6]) }),
    4,
  );
  assert.deepEqual(
    r.map((t) => t.experts),
    [[1, 3], [2], [1, 2, 0], []],
  );
  assert.deepEqual(
    r[0].weights.map((w) => +w.toFixed(6)),
    [0.7, 0.3],
  );
  assert.throws(
    () => tokenExperts(aux({ kind: 'sparse', tokenIdx: Int32Array.from([5]), expertIdx: Int32Array.from([0]), weights: tensor(Float32Array.from([1]), [1]) }), 2),
    /assignment 0 names token 5, outside the 2 tokens/,
  );
  // soft: 2 experts x 2 slots; token 0 puts 0.1 + 0.2 on expert 0 and 0.7 on expert 1
  const combine = tensor(Float32Array.from([0.1, 0.2, 0.7, 0, 0.5, 0.4, 0.05, 0.05]), [2, 4]);
  const s = tokenExperts(aux({ kind: 'soft', slotsPerExpert: 2, dispatch: combine, combine }), 2, 1);
  assert.deepEqual(
    s.map((t) => t.experts),
    [[1], [0]],
  );
  assert.ok(Math.abs(s[1].weights[0] - 0.9) < 1e-6);
});

const CFG = {
  vocab_size: 256,
  hidden_size: 16,
  num_hidden_layers: 2,
  num_attention_heads: 2,
  moe_intermediate_size: 16,
  max_position_embeddings: 48,
  initializer_range: 0.3,
  num_local_experts: 4,
  num_experts_per_tok: 2,
};

test('routing traced during KV-cached generation equals one full forward over prompt + generated tokens', () => {
  const model = new MoETransformerLM(parseModelConfig(CFG), 3).eval();
  const tok = new ByteTokenizer();
  const opts = { maxNewTokens: 12, temperature: 0.9, seed: 4 };
  const plain = generate(model, tok, 'ab\n', opts);
  const traced = generate(model, tok, 'ab\n', { ...opts, traceRouting: true });
  assert.equal(traced.text, plain.text, 'tracing does not change the text');
  assert.equal(plain.routing, undefined);
  const r = traced.routing!;
  assert.equal(r.length, 3 + 12, 'every prompt and generated token, the last one included');
  assert.deepEqual(
    r.slice(0, 3).map((t) => [t.id, t.text, t.prompt]),
    [
      [97, 'a', true],
      [98, 'b', true],
      [10, '\n', true],
    ],
  );
  assert.deepEqual(
    r.slice(3).map((t) => t.id),
    Array.from(traced.ids),
  );
  const ids = Int32Array.from(r.map((t) => t.id));
  const full = noGrad(() => model.forward(ids, 1, ids.length, { ctx: { training: false, step: 0, rng: new Rng(0) } }));
  assert.deepEqual(
    full.aux.map((a) => a.layer),
    [0, 1],
  );
  full.aux.forEach(({ layer, aux: a }) => {
    const ref = tokenExperts(a, ids.length);
    r.forEach((t, i) => {
      const got = t.layers.find((l) => l.layer === layer)!;
      assert.deepEqual(got.experts, ref[i].experts, `layer ${layer} token ${i}`);
      got.weights.forEach((w, j) => assert.ok(Math.abs(w - ref[i].weights[j]) < 1e-4, `weight ${w} vs ${ref[i].weights[j]}`));
      assert.equal(got.experts.length, 2);
    });
  });
});

test('the terminal view: colour only when asked, control characters escaped, one row per token', () => {
  const tokens = [
    { id: 65, text: 'A', prompt: true, layers: [{ layer: 0, experts: [2, 1], weights: [0.6, 0.4] }] },
    { id: 10, text: '\n', prompt: false, layers: [{ layer: 0, experts: [0, 3], weights: [0.55, 0.45] }] },
  ];
  const plain = formatRouting(tokens, { color: false, numExperts: 4 });
  assert.ok(!plain.includes('\x1b['), 'no escape codes without colour');
  assert.match(plain, /^ {3}0 {2}A .*2\(0\.60\) 1\(0\.40\) .*prompt$/m);
  assert.match(plain, /^ {3}1 {2}\\n .*0\(0\.55\) 3\(0\.45\)/m);
  const coloured = formatRouting(tokens, { color: true, numExperts: 4 });
  // eslint-disable-next-line no-control-regex -- control characters are what this matches
  assert.match(coloured, /layer 0 \(colour = top expert\): \x1b\[48;5;\d+m/);
  assert.equal(visible('a\tb\x07'), 'a\\tb\\x07');
  assert.match(formatRouting([{ id: 1, text: 'x', prompt: false, layers: [] }], { color: true, numExperts: 0 }), /no MoE layers \(dense\)/);
});

const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../src/cli/main.js');
function cli(args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...process.env, MOE_BACKEND: 'js', NO_COLOR: '1' }, timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('CLI: generate --show-routing (table and --json), eval --trace, report RUN and data', () => {
  const dir = tmpDir('routing-cli');
  const cfg = path.join(dir, 'cfg.json');
  fs.writeFileSync(
    cfg,
    JSON.stringify({
      model: { hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, max_position_embeddings: 32, num_local_experts: 4, num_experts_per_tok: 2, moe_intermediate_size: 16 },
      training: { steps: 2, batch_size: 2, seq_len: 16, warmup_steps: 1, eval_interval: 1, eval_batches: 1, save_interval: 2 },
      data: { sources: ['shakespeare', 'linux'] },
    }),
  );
  const run = path.join(dir, 'run');
  const t = cli(['train', '--config', cfg, '--out', run, '--quiet']);
  assert.equal(t.code, 0, t.stderr);
  const g = cli(['generate', '--ckpt', run, '--prompt', 'To', '--max-tokens', '4', '--show-routing']);
  assert.equal(g.code, 0, g.stderr);
  assert.match(g.stdout, /routing per token:/);
  assert.match(g.stdout, /^ {3}0 {2}T .*prompt$/m);
  assert.equal(g.stdout.split('\n').filter((l) => /^ {2,3}\d+ {2}/.test(l)).length, 2 + 4);
  const j = cli(['generate', '--ckpt', run, '--prompt', 'To', '--max-tokens', '4', '--show-routing', '--json']);
  assert.equal(j.code, 0, j.stderr);
  const o = JSON.parse(j.stdout);
  assert.equal(o.routing.length, 6);
  assert.deepEqual(o.routing[0].layers[0].experts.length, 2);
  assert.equal(o.ids.length, 4);
  const e = cli(['eval', '--ckpt', run, '--trace', '5', '--json']);
  assert.equal(e.code, 0, e.stderr);
  const ev = JSON.parse(e.stdout);
  assert.deepEqual(
    ev.trace.map((x: { domain: string }) => x.domain),
    ['shakespeare', 'linux'],
  );
  assert.equal(ev.trace[1].tokens.length, 5);
  const et = cli(['eval', '--ckpt', run, '--trace']);
  assert.equal(et.code, 0, et.stderr);
  assert.match(et.stdout, /routing per token, linux \(first validation window\):/);
  assert.equal(cli(['eval', '--ckpt', run, '--trace', '0']).code, 1);
  const rep = cli(['report', run]);
  assert.equal(rep.code, 0, rep.stderr);
  assert.match(rep.stdout, /^report: .*report\.html \(2 logged steps, 2 evaluations\)/);
  assert.ok(fs.readFileSync(path.join(run, 'report.html'), 'utf8').includes('data-chart="load-balance"'));
  const bad = cli(['report', path.join(dir, 'nope')]);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /^moe-ts: report: .*nope is not a run directory\n$/);
  const d = cli(['data']);
  assert.equal(d.code, 0, d.stderr);
  for (const s of ['shakespeare', 'wikitext', 'linux', 'CC BY-SA 3.0', 'GPL-2.0', 'linux-valid.txt (valid', 'the test split is not used']) assert.ok(d.stdout.includes(s), s);
  const dj = JSON.parse(cli(['data', '--json']).stdout);
  assert.deepEqual(
    dj.corpora.map((c: { name: string }) => c.name),
    ['shakespeare', 'wikitext', 'linux'],
  );
  fs.rmSync(dir, { recursive: true, force: true });
});
