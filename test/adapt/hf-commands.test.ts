// Issue 17: every adapt command works on an imported Hugging Face (mixtral) directory, and the "before" row of its
// table is the loss of the moe-ts model the directory was exported from (so the import is the same model).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { MoETransformerLM } from '../../src/models/transformer.js';
import { ByteTokenizer } from '../../src/data/tokenizer/byte.js';
import { parseRunConfig } from '../../src/models/config.js';
import { loadAnyModel, adaptDataset, measureModel, saveModelRun } from '../../src/adapt/common.js';
import { tmpDir } from '../train/helpers.js';

const cli = path.join(path.dirname(fileURLToPath(import.meta.url)), '../../src/cli/main.js');
const run = (args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', env: { ...process.env, MOE_BACKEND: 'js' }, timeout: 120_000 });

test('upcycle/peft/extend/prune/merge/distill/quantize/analyze on a Hugging Face mixtral directory: each writes its table', () => {
  const dir = tmpDir('hf-adapt');
  try {
    // hidden 32, widths multiple of 32: the quantised fast path's block size
    const cfg = parseRunConfig({
      model: { vocab_size: 256, hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 2, max_position_embeddings: 32, num_local_experts: 4, num_experts_per_tok: 2, moe_intermediate_size: 32 },
      training: { batch_size: 2, seq_len: 16, eval_batches: 1, eval_interval: 100, save_interval: 100, warmup_steps: 1, lr: 1e-2 },
    });
    const src = path.join(dir, 'moe');
    saveModelRun(src, new MoETransformerLM(cfg.model, 7), new ByteTokenizer(), cfg);
    const hf = path.join(dir, 'moe-hf');
    const c = run(['convert', src, hf, '--to', 'hf']);
    assert.equal(c.status, 0, c.stderr);
    assert.equal(JSON.parse(fs.readFileSync(path.join(hf, 'config.json'), 'utf8')).model_type, 'mixtral');
    const cfgFile = path.join(dir, 'cfg.json');
    fs.writeFileSync(cfgFile, JSON.stringify({ training: cfg.training }));

    const lm = loadAnyModel(src);
    const hfLm = loadAnyModel(hf);
    // the import is the exported model: equal losses on the same windows
    const srcData = adaptDataset(lm, { sources: ['shakespeare'], batches: 1 }).data;
    const a = measureModel('moe-ts', lm.model.eval(), srcData, 1).loss;
    const b = measureModel('hf', hfLm.model.eval(), srcData, 1).loss;
    assert.ok(Math.abs(a - b) < 1e-5, `moe-ts ${a} vs its Hugging Face export ${b}`);
    // the commands cut windows by the directory's own settings (no training section: the defaults)
    const ref = measureModel('ref', lm.model, adaptDataset(hfLm, { sources: ['shakespeare'], batches: 1 }).data, 1).loss;
    const table = (args: string[], file: string) => {
      const r = run(args);
      assert.equal(r.status, 0, `${args.join(' ')}: ${r.stderr}`);
      const j = JSON.parse(fs.readFileSync(file, 'utf8'));
      assert.ok(j.rows.length >= 2, `${file}: a before and an after row`);
      for (const row of j.rows) for (const k of ['loss', 'params', 'activeParams', 'tokensPerSec']) assert.ok(Number.isFinite(row[k]), `${file} ${row.label} ${k}`);
      return j;
    };
    const at = (n: string) => path.join(dir, n);
    const m = ['--data', 'shakespeare', '--batches', '1'];
    const before = (j: { rows: { loss: number }[] }, what: string) => assert.ok(Math.abs(j.rows[0].loss - ref) < 1e-4, `${what}: before ${j.rows[0].loss} vs the exported model ${ref}`);

    before(table(['prune', hf, '--fractions', '0.5', '--out', at('prune'), ...m], at('prune/prune.json')), 'prune');
    before(table(['prune', hf, '--criterion', 'moe-pruner', '--fractions', '0.5', '--out', at('mp'), ...m], at('mp/prune.json')), 'prune moe-pruner');
    before(table(['prune', hf, '--criterion', 'router-change', '--reference', src, '--fractions', '0.5', '--out', at('rc'), ...m], at('rc/prune.json')), 'prune router-change');
    before(table(['merge', hf, '--experts', '2', '--out', at('merge'), ...m], at('merge/merge.json')), 'merge');
    before(table(['distill', hf, '--steps', '1', '--train-data', 'shakespeare', '--calibration', '1', '--out', at('distill'), ...m], at('distill/distill.json')), 'distill');
    before(table(['extend', hf, '--add-experts', '1', '--steps', '1', '--out', at('ext'), '--data', 'linux', '--eval-data', 'shakespeare', '--batches', '1'], at('ext/extend.json')), 'extend');
    const q = table(['quantize', hf, '--experts-only', '--bits', '8', '--tokens', '48', '--out', at('q'), '--data', 'shakespeare'], at('q/quantize-experts.json'));
    assert.equal(q.rows.length, 2, 'f32 and 8-bit rows');
    // the upcycled MoE (a run) back to Hugging Face, then upcycled again from there is refused: it has no dense FFN
    const up = run(['upcycle', hf, '--experts', '2', '--out', at('up'), ...m]);
    assert.equal(up.status, 1);
    assert.match(up.stderr, /layer 0 is not a dense FFN layer/);

    const ft = at('lora');
    const t = run([
      'train',
      '--config',
      cfgFile,
      '--model',
      hf,
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
      '1',
      '--out',
      ft,
      '--quiet',
    ]);
    assert.equal(t.status, 0, t.stderr);
    const pt = JSON.parse(fs.readFileSync(path.join(ft, 'peft.json'), 'utf8'));
    const want = measureModel('base', hfLm.model.eval(), adaptDataset(hfLm, { sources: ['shakespeare', 'wikitext', 'linux'] }).data, hfLm.config.training.eval_batches);
    assert.ok(Math.abs(pt.rows[0].loss - want.loss) < 1e-6, `peft before ${pt.rows[0].loss} vs the base ${want.loss}`);
    const att = table(['peft', 'attach', hf, path.join(ft, 'adapters.safetensors'), '--out', at('att'), ...m], at('att/peft-attach.json'));
    before(att, 'peft attach');

    const an = run(['analyze', hf, '--data', 'shakespeare', '--batches', '1', '--trace', '4', '--no-ablation', '--out', at('an/analysis.html')]);
    assert.equal(an.status, 0, an.stderr);
    const aj = JSON.parse(fs.readFileSync(at('an/analysis.json'), 'utf8'));
    assert.equal(aj.similarity.length, 2, 'two MoE layers');
    assert.ok(fs.statSync(at('an/analysis.html')).size > 1000);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
