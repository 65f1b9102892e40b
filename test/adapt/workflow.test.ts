// Issue 17 "Done when", end to end through the CLI: each command's output is the next one's input.
// train --dense -> upcycle -> train --model -> train --peft lora-experts (another corpus) -> prune
// -> quantize --experts-only -> distill -> analyze. The commands' own properties are tested in their
// files; here what is checked is that the outputs compose and keep what the previous step made.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { noGrad } from '../../src/tensor/tensor.js';
import { Rng } from '../../src/tensor/random.js';
import { loadAnyModel, formatAdaptTable, ADAPT_DOMAINS } from '../../src/adapt/common.js';
import type { MoETransformerLM } from '../../src/models/transformer.js';
import { tmpDir } from '../train/helpers.js';

const cli = path.join(path.dirname(fileURLToPath(import.meta.url)), '../../src/cli/main.js');

function run(args: string[]): string {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', env: { ...process.env, MOE_BACKEND: 'js' }, timeout: 120_000 });
  assert.equal(r.status, 0, `moe-ts ${args.join(' ')}:\n${r.stderr}`);
  return r.stdout;
}

/** The before/after table `<dir>/<name>.md|json`: rows with the loss per domain, params, active params and tokens/s; the .md is the .json's table. */
function table(
  dir: string,
  name: string,
  domains = ADAPT_DOMAINS,
): { rows: { label: string; loss: number; domains: { domain: string; loss: number }[]; params: number; activeParams: number }[] } & Record<string, unknown> {
  const md = fs.readFileSync(path.join(dir, `${name}.md`), 'utf8');
  const js = JSON.parse(fs.readFileSync(path.join(dir, `${name}.json`), 'utf8'));
  assert.equal(md, formatAdaptTable(js), `${name}.md is the table of ${name}.json`);
  assert.match(md, new RegExp(`\\| model \\| ${domains.map((d) => `loss ${d}`).join(' \\| ')} \\| loss \\(all\\) \\|(.* \\|)? params \\| active params \\| tokens/s \\|`));
  assert.ok(js.rows.length >= 2, `${name}: a before and an after row`);
  for (const r of js.rows) {
    assert.deepEqual(
      r.domains.map((d: { domain: string }) => d.domain),
      domains,
      `${name} ${r.label}`,
    );
    for (const d of r.domains) assert.ok(Number.isFinite(d.loss) && d.loss > 0, `${name} ${r.label} ${d.domain}: loss ${d.loss}`);
    assert.ok(r.params > 0 && r.activeParams > 0 && r.activeParams <= r.params && r.tokensPerSec > 0, `${name} ${r.label}: sizes and speed`);
  }
  return js;
}

function logits(m: MoETransformerLM, ids: Int32Array): Float32Array {
  m.eval();
  return noGrad(() => m.forward(ids, 1, ids.length, { ctx: { training: false, step: 0, rng: new Rng(0) } }).logits.data.slice());
}

const maxDiff = (a: Float32Array, b: Float32Array) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);
const ids = Int32Array.from({ length: 24 }, (_, i) => (i * 53 + 7) % 256);

test('the issue-17 workflow composes: dense -> upcycle -> train -> LoRA experts on linux -> prune -> quantize experts -> distill -> analyze', () => {
  const dir = tmpDir('workflow');
  const at = (n: string) => path.join(dir, n);
  try {
    // hidden 32 and widths multiple of 32: the quantised fast path's block size
    const cfg = at('tiny.json');
    fs.writeFileSync(
      cfg,
      JSON.stringify({
        model: {
          vocab_size: 256,
          hidden_size: 32,
          num_hidden_layers: 2,
          num_attention_heads: 2,
          max_position_embeddings: 32,
          num_local_experts: 4,
          num_experts_per_tok: 2,
          moe_intermediate_size: 32,
        },
        training: { batch_size: 2, seq_len: 16, eval_batches: 1, eval_interval: 100, save_interval: 100, warmup_steps: 1, lr: 1e-2 },
      }),
    );
    const all = ['--data', ...ADAPT_DOMAINS];

    // 1. the dense checkpoint: the config's FLOP-matched dense model (FFN width 2 x 32)
    run(['train', '--config', cfg, '--dense', ...all, '--steps', '3', '--out', at('dense'), '--quiet']);
    const dense = loadAnyModel(at('dense')).model;
    assert.equal(dense.config.num_local_experts, 0);
    assert.equal(dense.config.intermediate_size, 64);

    // 2. upcycle (copies, renormalised top-2): the MoE computes the trained dense model's logits
    run(['upcycle', at('dense'), '--experts', '4', '--top-k', '2', '--out', at('up'), '--batches', '1']);
    const up = table(at('up'), 'upcycle');
    for (let d = 0; d < ADAPT_DOMAINS.length; d++) assert.ok(Math.abs(up.rows[0].domains[d].loss - up.rows[1].domains[d].loss) < 1e-4, ADAPT_DOMAINS[d]);
    const moe = loadAnyModel(at('up')).model;
    assert.equal(moe.config.num_local_experts, 4);
    assert.ok(maxDiff(logits(moe, ids), logits(dense, ids)) < 1e-4, 'upcycled copy = dense logits');

    // 3. continue training the upcycled run: a new run from its weights; the experts move apart from their copies
    run(['train', '--config', cfg, '--model', at('up'), ...all, '--steps', '3', '--out', at('ft'), '--quiet']);
    const ft = loadAnyModel(at('ft')).model;
    assert.equal(ft.config.num_local_experts, 4);
    const w1 = (m: MoETransformerLM) => m.stateDict().get('layers.0.block_sparse_moe.experts.w1')!.data;
    assert.ok(maxDiff(w1(ft), w1(moe)) > 0, 'the experts trained');
    assert.equal(JSON.parse(fs.readFileSync(at('ft/results.json'), 'utf8')).final.domains.length, 3);

    // 4. LoRA experts on linux alone, the base frozen: every base tensor bit-identical, the adapters trained
    const lo = run([
      'train',
      '--config',
      cfg,
      '--model',
      at('ft'),
      '--peft',
      'lora-experts',
      '--lora-experts',
      '2',
      '--lora-top-k',
      '1',
      '--lora-rank',
      '2',
      '--data',
      'linux',
      '--steps',
      '3',
      '--out',
      at('lora'),
      '--quiet',
    ]);
    assert.match(lo, /adapters: \d+ tensors in .*adapters\.safetensors/);
    const lora = loadAnyModel(at('lora')).model;
    const base = ft.stateDict();
    let adapters = 0;
    for (const [n, v] of lora.stateDict()) {
      if (n.includes('.lora_')) {
        adapters += n.endsWith('lora_B') && v.data.some((x) => x !== 0) ? 1 : 0;
        continue;
      }
      assert.deepEqual(v.data, base.get(n)!.data, `base tensor ${n} unchanged`);
    }
    assert.ok(adapters > 0, 'some LoRA B left zero init');

    // 5. prune the adapted MoE to half its experts: the adapters come along untouched
    run(['prune', at('lora'), '--fractions', '0.5', '--out', at('pruned'), '--batches', '1']);
    const pr = table(at('pruned'), 'prune');
    assert.deepEqual(
      pr.rows.map((r) => r.label),
      ['4 experts (before)', 'pruned 50% -> 2 experts'],
    );
    assert.ok(pr.rows[1].params < pr.rows[0].params);
    const pruned = loadAnyModel(at('pruned')).model;
    assert.equal(pruned.config.num_local_experts, 2);
    assert.deepEqual(pruned.config.peft, lora.config.peft);
    const loraState = lora.stateDict();
    for (const [n, v] of pruned.stateDict()) if (n.includes('.lora_')) assert.deepEqual(v.data, loraState.get(n)!.data, n);

    // 6. quantise the pruned experts: the table is written next to the run; the expert bytes are those of 2 experts
    run(['quantize', at('pruned'), '--experts-only', '--bits', '8', '--tokens', '48']);
    const q = table(at('pruned'), 'quantize-experts') as unknown as { rows: { domains: { loss: number }[] }[]; table: { bits: number; expertBytes: number }[] };
    assert.deepEqual(
      q.table.map((t) => t.bits),
      [32, 8],
    );
    assert.equal(q.table[0].expertBytes, 2 * 2 * 3 * 32 * 64 * 4, 'f32: 2 layers x 2 experts x 3 matrices of 32 x 64');
    assert.ok(q.table[1].expertBytes < q.table[0].expertBytes / 3);

    // 7. distil the pruned MoE into a dense student: its FFN width is the experts', the adapters kept
    run(['distill', at('pruned'), '--steps', '2', '--train-data', 'shakespeare', '--calibration', '2', '--out', at('student'), '--batches', '1']);
    const ds = table(at('student'), 'distill') as unknown as { rows: { params: number }[]; gap: { domain: string }[] };
    assert.equal(ds.rows.length, 3);
    assert.ok(ds.rows[2].params < ds.rows[0].params, 'the student is smaller than the teacher');
    assert.deepEqual(
      ds.gap.map((g) => g.domain),
      ADAPT_DOMAINS,
    );
    const student = loadAnyModel(at('student')).model;
    assert.equal(student.config.num_local_experts, 0);
    assert.ok(
      student.layers.every((l) => l.mlp && !l.block_sparse_moe),
      'every layer dense',
    );
    assert.equal(student.config.intermediate_size, 64);
    // the adapters came along, and the whole student trained, not only them
    assert.deepEqual(student.config.peft, pruned.config.peft);
    const emb = (m: MoETransformerLM) => m.stateDict().get('embed_tokens.weight')!.data;
    assert.ok(maxDiff(emb(student), emb(pruned)) > 0, 'the student trained beyond its adapters');

    // 8. inspect the pruned experts: page and numbers for 2 layers x 2 experts on the run's own corpus (linux)
    const err = spawnSync(process.execPath, [cli, 'analyze', at('pruned'), '--batches', '1', '--trace', '8', '--out', at('an/analysis.html')], {
      encoding: 'utf8',
      env: { ...process.env, MOE_BACKEND: 'js' },
      timeout: 120_000,
    });
    assert.equal(err.status, 0, err.stderr);
    assert.ok(fs.statSync(at('an/analysis.html')).size > 1000);
    const an = JSON.parse(fs.readFileSync(at('an/analysis.json'), 'utf8'));
    assert.equal(an.numExperts, 2);
    assert.equal(an.layers.length, 2);
    assert.equal(an.ablation.length, 2);
    assert.equal(an.ablation[0].length, 2);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
