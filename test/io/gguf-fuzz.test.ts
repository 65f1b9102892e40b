/**
 * Seeded mutation fuzzing of the GGUF reader and fromGGUF: random byte flips, u64 fields
 * overwritten with extreme values, truncations and header insertions/deletions of a valid
 * exported file must each either load or fail with a one-line GGUFError; never a RangeError,
 * TypeError, hang or huge allocation. Bounded: a fixed number of cases per seed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Rng } from '../../src/tensor/random.js';
import { MoETransformerLM } from '../../src/models/transformer.js';
import { parseModelConfig } from '../../src/models/config.js';
import { ByteTokenizer } from '../../src/data/tokenizer/index.js';
import { GGUFFile, GGUFError, exportGGUF, fromGGUF } from '../../src/io/gguf/index.js';
import { tmpDir } from '../train/helpers.js';

const dir = tmpDir('gguf-fuzz');
const base = path.join(dir, 'base.gguf');
const m = new MoETransformerLM(
  parseModelConfig({ hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2, num_local_experts: 2, num_experts_per_tok: 1, moe_intermediate_size: 32, max_position_embeddings: 16 }),
  1,
);
exportGGUF(m, new ByteTokenizer(), base, { quant: 'q8_0' });
const good = new Uint8Array(fs.readFileSync(base));
const headerEnd = (() => {
  const f = GGUFFile.open(base);
  try {
    return f.dataOffset;
  } finally {
    f.close();
  }
})();

const EXTREMES = [0n, 1n, 0xffn, 0xffffffffn, 1n << 32n, 1n << 53n, 1n << 62n, 0xffffffffffffffffn];

function mutate(rng: Rng, src: Uint8Array): Uint8Array {
  // most mutations hit the header: that is where the structure is
  const pos = (): number => (rng.next() < 0.9 ? Math.floor(rng.next() * headerEnd) : Math.floor(rng.next() * src.length));
  const kind = Math.floor(rng.next() * 5);
  let b = src.slice();
  const n = 1 + Math.floor(rng.next() * 4);
  for (let i = 0; i < n; i++) {
    if (kind === 0) b[pos()] ^= 1 << Math.floor(rng.next() * 8);
    else if (kind === 1) b[pos()] = Math.floor(rng.next() * 256);
    else if (kind === 2) {
      const p = Math.min(pos(), b.length - 8);
      new DataView(b.buffer).setBigUint64(p, EXTREMES[Math.floor(rng.next() * EXTREMES.length)], true);
    } else if (kind === 3) b = b.slice(0, pos());
    else {
      const p = pos();
      const ins = rng.next() < 0.5;
      const out = new Uint8Array(b.length + (ins ? 1 : -1));
      out.set(b.subarray(0, p));
      if (ins) {
        out[p] = Math.floor(rng.next() * 256);
        out.set(b.subarray(p), p + 1);
      } else out.set(b.subarray(p + 1), p);
      b = out;
    }
  }
  return b;
}

function checkError(e: unknown, what: string): void {
  assert.ok(e instanceof GGUFError, `${what}: expected a GGUFError, got ${(e as Error)?.constructor?.name}: ${(e as Error)?.message}`);
  assert.ok(!e.message.includes('\n'), `${what}: error spans lines: ${e.message}`);
}

for (const seed of [1, 2, 3]) {
  test(`mutated GGUF files load or fail with one clear line (seed ${seed}, 150 cases)`, () => {
    const rng = new Rng(seed);
    const file = path.join(dir, `m-${seed}.gguf`);
    let loaded = 0;
    for (let i = 0; i < 150; i++) {
      const bytes = mutate(rng, good);
      fs.writeFileSync(file, bytes);
      const what = `seed ${seed} case ${i}`;
      let f: GGUFFile | null = null;
      try {
        f = GGUFFile.open(file);
      } catch (e) {
        checkError(e, what);
      }
      if (f) {
        try {
          for (const name of f.tensors.keys()) {
            try {
              f.readFloat32(name);
            } catch (e) {
              checkError(e, `${what} tensor ${name}`);
            }
          }
        } finally {
          f.close();
        }
        try {
          fromGGUF(file);
          loaded++;
        } catch (e) {
          checkError(e, `${what} fromGGUF`);
        }
      }
    }
    assert.ok(loaded < 150, 'some mutations must be caught');
  });
}
