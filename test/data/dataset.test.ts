import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Batch, MixedDataset, splitTrainVal, tokenizeDomains } from '../../src/data/dataset.js';
import { ByteTokenizer } from '../../src/data/tokenizer/index.js';
import { loadDomain } from '../../src/data/corpus.js';

/** A stream whose token values encode domain and position, so every window can be traced. */
function stream(domain: number, n: number): Int32Array {
  const a = new Int32Array(n);
  for (let i = 0; i < n; i++) a[i] = domain * 1_000_000 + i;
  return a;
}

function same(a: Batch, b: Batch): boolean {
  return (
    a.inputs.every((v, i) => v === b.inputs[i]) &&
    a.targets.every((v, i) => v === b.targets[i]) &&
    a.domains.every((v, i) => v === b.domains[i]) &&
    a.starts.every((v, i) => v === b.starts[i])
  );
}

test('train/validation split sizes', () => {
  const s = stream(0, 1000);
  const { train, val } = splitTrainVal(s, 0.1);
  assert.equal(train.length, 900);
  assert.equal(val.length, 100);
  assert.equal(val[0], 900);
  assert.equal(splitTrainVal(s, 0).val.length, 0);
  assert.equal(splitTrainVal(stream(0, 1005), 0.1).val.length, 100);
  assert.throws(() => splitTrainVal(s, 1), /valFraction must be in \[0, 1\)/);
});

test('windows are contiguous slices of the right domain train split, with shifted targets', () => {
  const ds = new MixedDataset(
    [
      { name: 'a', tokens: stream(0, 5000) },
      { name: 'b', tokens: stream(1, 3000), weight: 2 },
    ],
    { seqLen: 16, batchSize: 8, valFraction: 0.2, seed: 3 },
  );
  assert.deepEqual(ds.domainNames, ['a', 'b']);
  const seen = [0, 0];
  for (let step = 0; step < 50; step++) {
    const b = ds.nextBatch();
    assert.equal(b.inputs.length, 8 * 16);
    for (let s = 0; s < 8; s++) {
      const d = b.domains[s];
      const train = ds.trainTokens(d);
      const st = b.starts[s];
      assert.ok(st >= 0 && st + 17 <= train.length);
      for (let t = 0; t < 16; t++) {
        assert.equal(b.inputs[s * 16 + t], train[st + t]);
        assert.equal(b.targets[s * 16 + t], train[st + t + 1]);
        assert.equal(Math.floor(b.inputs[s * 16 + t] / 1_000_000), d); // label matches content
      }
      // never reaches into the validation tail
      assert.ok(b.targets[s * 16 + 15] % 1_000_000 < train.length);
      seen[d]++;
    }
  }
  assert.equal(ds.stepCount, 50);
  // weight 2:1 -> about two thirds from b (400 draws, deterministic seed)
  assert.ok(seen[1] / 400 > 0.55 && seen[1] / 400 < 0.78, `share of b: ${seen[1] / 400}`);
});

test('same seed gives the same batches; state save/restore resumes exactly', () => {
  const doms = [
    { name: 'a', tokens: stream(0, 4000) },
    { name: 'b', tokens: stream(1, 4000) },
  ];
  const opts = { seqLen: 8, batchSize: 4, seed: 42 };
  const x = new MixedDataset(doms, opts);
  const y = new MixedDataset(doms, opts);
  for (let i = 0; i < 5; i++) assert.ok(same(x.nextBatch(), y.nextBatch()));
  const z = new MixedDataset(doms, { ...opts, seed: 43 });
  const w = new MixedDataset(doms, opts);
  assert.ok(!same(z.nextBatch(), w.nextBatch()));

  const saved = JSON.parse(JSON.stringify(x.getState()));
  const next = [x.nextBatch(), x.nextBatch()];
  const resumed = new MixedDataset(doms, { ...opts, seed: 999 });
  resumed.setState(saved);
  assert.equal(resumed.stepCount, 5);
  assert.ok(same(resumed.nextBatch(), next[0]));
  assert.ok(same(resumed.nextBatch(), next[1]));
  assert.throws(() => resumed.setState({ rng: [1, 2], step: 0 }), /four 32-bit/);
  assert.throws(() => resumed.setState({ rng: [1, 2, 3, 4], step: -1 }), /step: integer >= 0/);
});

test('zero-weight domains are validation only', () => {
  const ds = new MixedDataset(
    [
      { name: 'a', tokens: stream(0, 2000) },
      { name: 'held-out', tokens: stream(1, 200), weight: 0 },
    ],
    { seqLen: 8, batchSize: 16, valFraction: 0.5 },
  );
  for (let i = 0; i < 20; i++) assert.ok(ds.nextBatch().domains.every((d) => d === 0));
  assert.ok(ds.valWindowCount('held-out') > 0);
});

test('validation windows are fixed per domain, tile the split and do not touch the sampler', () => {
  const doms = [
    { name: 'a', tokens: stream(0, 1000) },
    { name: 'b', tokens: stream(1, 2000) },
  ];
  const ds = new MixedDataset(doms, { seqLen: 10, batchSize: 4, valFraction: 0.1, seed: 1 });
  const ref = new MixedDataset(doms, { seqLen: 10, batchSize: 4, valFraction: 0.1, seed: 1 });
  // a: val = 100 tokens -> floor(99/10) = 9 windows; b: 200 -> 19
  assert.equal(ds.valWindowCount('a'), 9);
  assert.equal(ds.valWindowCount(1), 19);
  const batches = [...ds.valBatches('a')];
  assert.deepEqual(batches.map((b) => b.batchSize), [4, 4, 1]);
  const val = ds.valTokens('a');
  let k = 0;
  for (const b of batches) {
    for (let s = 0; s < b.batchSize; s++, k++) {
      assert.equal(b.domains[s], 0);
      assert.equal(b.starts[s], k * 10);
      for (let t = 0; t < 10; t++) {
        assert.equal(b.inputs[s * 10 + t], val[k * 10 + t]);
        assert.equal(b.targets[s * 10 + t], val[k * 10 + t + 1]);
      }
    }
  }
  assert.equal(val[0], 900); // the tail of the stream
  // other seeds, same windows
  const other = new MixedDataset(doms, { seqLen: 10, batchSize: 4, valFraction: 0.1, seed: 77 });
  const again = [...other.valBatches('a')];
  batches.forEach((b, i) => assert.ok(same(b, again[i])));
  // iterating validation does not change the training sequence
  assert.ok(same(ds.nextBatch(), ref.nextBatch()));
  // capped and evenly spaced
  const capped = new MixedDataset(doms, { seqLen: 10, batchSize: 8, valFraction: 0.1, maxValWindows: 5 });
  assert.equal(capped.valWindowCount('b'), 5);
  const [cb] = [...capped.valBatches('b')];
  assert.deepEqual(Array.from(cb.starts), [0, 30, 70, 110, 150]);
  assert.throws(() => [...ds.valBatches('zzz')], /unknown domain "zzz" \(have a, b\)/);
});

test('construction errors name the domain and the field', () => {
  const t = stream(0, 100);
  assert.throws(() => new MixedDataset([], { seqLen: 8, batchSize: 2 }), /at least one domain/);
  assert.throws(() => new MixedDataset([{ name: 'a', tokens: t }], { seqLen: 0, batchSize: 2 }), /seqLen must be a positive integer/);
  assert.throws(() => new MixedDataset([{ name: 'a', tokens: t }], { seqLen: 8, batchSize: 1.5 }), /batchSize must be a positive integer/);
  assert.throws(() => new MixedDataset([{ name: 'tiny', tokens: stream(0, 20) }], { seqLen: 16, batchSize: 2, valFraction: 0.5 }), /domain 0 \("tiny"\): train split has 10 tokens, fewer than seqLen \+ 1 = 17/);
  assert.throws(() => new MixedDataset([{ name: 'a', tokens: t }], { seqLen: 16, batchSize: 2, valFraction: 0.1 }), /domain 0 \("a"\): validation split has 10 tokens/);
  assert.throws(() => new MixedDataset([{ name: 'a', tokens: t, weight: -1 }], { seqLen: 8, batchSize: 2 }), /domain 0 \("a"\): weight must be a finite number >= 0/);
  assert.throws(() => new MixedDataset([{ name: 'a', tokens: t, weight: 0 }], { seqLen: 8, batchSize: 2 }), /all domain weights are 0/);
  assert.throws(() => new MixedDataset([{ name: 'a', tokens: t }, { name: 'a', tokens: t }], { seqLen: 8, batchSize: 2 }), /domain 1 \("a"\): duplicate domain name/);
  assert.throws(() => new MixedDataset([{ name: 'a', tokens: [1, 2] as unknown as Int32Array }], { seqLen: 1, batchSize: 1 }), /tokens must be an Int32Array/);
});

test('end to end with the embedded corpus and the byte tokenizer', () => {
  const tok = new ByteTokenizer();
  const text = loadDomain('shakespeare');
  const doms = tokenizeDomains(tok, [{ name: 'shakespeare', text }]);
  const ds = new MixedDataset(doms, { seqLen: 64, batchSize: 4, seed: 5 });
  const b = ds.nextBatch();
  const row = tok.decode(b.inputs.subarray(0, 64));
  assert.ok(text.includes(row));
  assert.equal(ds.valTokens(0).length, Math.floor(doms[0].tokens.length * 0.1));
});

test('a domain with its own validation split trains on all of its train stream and validates only on its split', () => {
  const train = stream(1, 500);
  const val = stream(2, 100);
  const ds = new MixedDataset([{ name: 'code', tokens: train, val }], { seqLen: 10, batchSize: 16, valFraction: 0.5, seed: 2 });
  assert.equal(ds.trainTokens('code').length, 500, 'valFraction does not cut a domain that has its own split');
  assert.deepEqual(Array.from(ds.valTokens('code')), Array.from(val));
  for (let i = 0; i < 20; i++) {
    const b = ds.nextBatch();
    for (const v of b.inputs) assert.equal(Math.floor(v / 1_000_000), 1, 'training never reads the validation split');
  }
  for (const vb of ds.valBatches('code')) for (const v of vb.inputs) assert.equal(Math.floor(v / 1_000_000), 2);
  assert.throws(() => new MixedDataset([{ name: 'code', tokens: train, val: stream(2, 5) }], { seqLen: 10, batchSize: 2 }), /domain 0 \("code"\): its validation split has 5 tokens/);
  const doms = tokenizeDomains(new ByteTokenizer(), [{ name: 'x', text: 'abc', valid: 'de' }]);
  assert.deepEqual(Array.from(doms[0].val!), [100, 101]);
});
