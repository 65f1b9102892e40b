import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng } from '../../src/tensor/random.js';

const M32 = (1n << 32n) - 1n;
const rotl = (x: bigint, k: bigint) => ((x << k) | (x >> (32n - k))) & M32;

/** Independent BigInt xoshiro128** (Blackman & Vigna reference code) from a raw state. */
function* xoshiro(state: number[]): Generator<number> {
  const s = state.map(BigInt);
  for (;;) {
    const out = (rotl((s[1] * 5n) & M32, 7n) * 9n) & M32;
    const t = (s[1] << 9n) & M32;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11n);
    yield Number(out);
  }
}

const draw = (r: Rng, n: number) => Array.from({ length: n }, () => r.nextU32());

test('nextU32 matches an independent xoshiro128** reference', () => {
  for (const state of [[1, 2, 3, 4], [0xffffffff, 0, 0x80000000, 12345], new Rng(42).getState()]) {
    const r = new Rng();
    r.setState(state);
    const ref = xoshiro(state);
    const want = Array.from({ length: 50 }, () => ref.next().value as number);
    assert.deepEqual(draw(r, 50), want, `state ${state}`);
  }
  const r = new Rng();
  r.setState([1, 2, 3, 4]);
  assert.equal(r.nextU32(), 11520, 'rotl(2 * 5, 7) * 9');
});

test('same seed gives the same stream; different seeds differ', () => {
  assert.deepEqual(draw(new Rng(7), 100), draw(new Rng(7), 100));
  const seen = new Set<string>();
  for (const seed of [0, 1, 2, 3, 42, 1e6, 0xffffffff, 0x7fffffff]) {
    const s = draw(new Rng(seed), 8).join(',');
    assert.ok(!seen.has(s), `seed ${seed} repeats another seed's stream`);
    seen.add(s);
  }
  // nearby seeds are decorrelated: first outputs differ in about half their bits
  let bits = 0;
  for (let s = 0; s < 64; s++) {
    let x = (new Rng(s).nextU32() ^ new Rng(s + 1).nextU32()) >>> 0;
    while (x) {
      bits += x & 1;
      x >>>= 1;
    }
  }
  assert.ok(bits / 64 > 12 && bits / 64 < 20, `mean differing bits ${bits / 64}`);
  assert.notDeepEqual(new Rng(0).getState(), [0, 0, 0, 0], 'seed 0 does not give the all-zero (stuck) state');
  assert.deepEqual(draw(new Rng(), 5), draw(new Rng(0), 5), 'default seed is 0');
});

test('getState/setState resume the stream exactly (across every sampler)', () => {
  const a = new Rng(99);
  for (let i = 0; i < 17; i++) a.next();
  a.normal();
  const saved = a.getState();
  const expect = [a.nextU32(), a.next(), a.int(1000), a.normal(), ...a.fillUniform(new Float32Array(3), -1, 1), ...a.fillNormal(new Float32Array(3), 2)];
  const b = new Rng(12345);
  b.setState(saved);
  const got = [b.nextU32(), b.next(), b.int(1000), b.normal(), ...b.fillUniform(new Float32Array(3), -1, 1), ...b.fillNormal(new Float32Array(3), 2)];
  assert.deepEqual(got, expect);
  // the state is a copy: mutating it (or drawing more) does not disturb a saved snapshot
  const c = new Rng(5);
  const st = c.getState();
  st[0] ^= 1;
  assert.deepEqual(draw(c, 4), draw(new Rng(5), 4));
  // a JSON round trip (as a checkpoint stores it) restores the same stream
  const d = new Rng(8);
  d.next();
  const restored = new Rng();
  restored.setState(JSON.parse(JSON.stringify(d.getState())));
  assert.deepEqual(draw(restored, 10), draw(d, 10));
});

test('setState rejects malformed states', () => {
  const r = new Rng();
  for (const bad of [[1, 2, 3], [1, 2, 3, 4, 5], [1, 2, 3, -1], [1, 2, 3, 2 ** 32], [1, 2, 3, 1.5], [1, 2, 3, NaN], 'abcd', null]) {
    assert.throws(() => r.setState(bad as unknown as number[]), /Rng\.setState: expected an array of four 32-bit unsigned integers/, JSON.stringify(bad));
  }
});

test('uniform samplers: range and moments, rough bucket uniformity', () => {
  const r = new Rng(2024);
  const n = 40000;
  let s = 0;
  let s2 = 0;
  const buckets = new Array<number>(10).fill(0);
  for (let i = 0; i < n; i++) {
    const u = r.next();
    assert.ok(u >= 0 && u < 1);
    s += u;
    s2 += u * u;
    buckets[Math.floor(u * 10)]++;
  }
  const mean = s / n;
  const variance = s2 / n - mean * mean;
  assert.ok(Math.abs(mean - 0.5) < 0.01, `mean ${mean}`);
  assert.ok(Math.abs(variance - 1 / 12) < 0.005, `variance ${variance}`);
  // chi-square with 9 dof: 99.9th percentile is ~27.9
  const chi = buckets.reduce((a, c) => a + (c - n / 10) ** 2 / (n / 10), 0);
  assert.ok(chi < 27.9, `chi-square ${chi}, buckets ${buckets}`);

  const f = r.fillUniform(new Float32Array(5000), -3, 5);
  assert.ok(f.every((v) => v >= -3 && v <= 5));
  assert.ok(Math.abs(f.reduce((a, v) => a + v, 0) / 5000 - 1) < 0.15);

  const counts = new Array<number>(7).fill(0);
  for (let i = 0; i < 14000; i++) {
    const k = r.int(7);
    assert.ok(Number.isInteger(k) && k >= 0 && k < 7);
    counts[k]++;
  }
  assert.ok(
    counts.every((c) => Math.abs(c - 2000) < 200),
    `int(7) counts ${counts}`,
  );
  assert.equal(r.int(1), 0);
  for (const bad of [0, -1, NaN]) assert.throws(() => r.int(bad), /Rng\.int: n must be positive/);
});

test('normal sampler: mean 0, variance 1, skew 0, kurtosis 3; fillNormal scales by std', () => {
  const r = new Rng(77);
  const n = 40000;
  const xs = Array.from({ length: n }, () => r.normal());
  const m = xs.reduce((a, v) => a + v, 0) / n;
  const c = (p: number) => xs.reduce((a, v) => a + (v - m) ** p, 0) / n;
  const v = c(2);
  assert.ok(Math.abs(m) < 0.02, `mean ${m}`);
  assert.ok(Math.abs(v - 1) < 0.03, `variance ${v}`);
  assert.ok(Math.abs(c(3) / v ** 1.5) < 0.06, `skew ${c(3) / v ** 1.5}`);
  assert.ok(Math.abs(c(4) / v ** 2 - 3) < 0.15, `kurtosis ${c(4) / v ** 2}`);
  assert.ok(xs.every(Number.isFinite));
  const within1 = xs.filter((x) => Math.abs(x) < 1).length / n;
  assert.ok(Math.abs(within1 - 0.6827) < 0.01, `P(|x| < 1) = ${within1}`);
  const f = r.fillNormal(new Float32Array(20000), 0.5);
  const fm = f.reduce((a, x) => a + x, 0) / f.length;
  const fv = f.reduce((a, x) => a + (x - fm) ** 2, 0) / f.length;
  assert.ok(Math.abs(Math.sqrt(fv) - 0.5) < 0.01, `std ${Math.sqrt(fv)}`);
});

test('shuffle: a seeded permutation, every position reachable', () => {
  const a = Array.from({ length: 20 }, (_, i) => i);
  new Rng(3).shuffle(a);
  assert.deepEqual(
    [...a].sort((x, y) => x - y),
    Array.from({ length: 20 }, (_, i) => i),
  );
  assert.notDeepEqual(
    a,
    Array.from({ length: 20 }, (_, i) => i),
  );
  const b = Array.from({ length: 20 }, (_, i) => i);
  new Rng(3).shuffle(b);
  assert.deepEqual(a, b, 'same seed, same permutation');
  const ia = Int32Array.from([1, 2, 3, 4, 5]);
  new Rng(1).shuffle(ia);
  assert.deepEqual(Array.from(ia).sort(), [1, 2, 3, 4, 5]);
  // element 0 lands in each of 4 slots about equally often
  const r = new Rng(11);
  const pos = [0, 0, 0, 0];
  for (let t = 0; t < 4000; t++) {
    const p = [0, 1, 2, 3];
    r.shuffle(p);
    pos[p.indexOf(0)]++;
  }
  assert.ok(
    pos.every((c) => Math.abs(c - 1000) < 120),
    `positions ${pos}`,
  );
  const empty: number[] = [];
  new Rng(1).shuffle(empty);
  assert.deepEqual(empty, []);
});
