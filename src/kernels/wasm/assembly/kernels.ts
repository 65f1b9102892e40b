// WebAssembly SIMD GEMM kernels for moe-ts (AssemblyScript; built by scripts/build-wasm.mjs).
//
// Every heavy call is a list of independent products ("problems": batch items, MoE groups),
// described by the JS side in shared memory, plus one ordered task queue that the threads drain
// with an atomic counter (dynamic scheduling, so a slow or late thread never stalls the others).
// Tasks come in three kinds:
//   - pack: NR-wide column strips of a B that several row blocks share, into a packed-B buffer;
//   - compute: a block of rows x a range of strips of one problem, on that packed B. It first
//     waits for its B's pack tasks (a per-problem counter, no global barrier);
//   - fused: all rows x a range of strips of one problem. It packs its own strips of B, one KC
//     slice at a time, into a per-thread buffer that stays in L2, and computes on it at once.
//     Used for small problems (MoE groups): B is packed once either way, and packing it
//     while hot saves writing it to memory and reading it back.
// A compute or fused task packs its A rows into MR-row panels (per KC-deep slice) and runs the
// register-blocked kernel. The main thread copies the inputs in problem order while the workers
// already run, publishing how many problems are in place; a task waits for its problem.
// No allocation happens here: all pointers come from the JS side.

// Tile of C held in registers: MR rows x NR columns = 4 x 2 f32x4 accumulators. TurboFan's
// scheduler hoists all loads of the loop body above the arithmetic, so a tile must fit with
// every B vector and A broadcast of one k step live at once: 8 accumulators + 2 B + 4 A +
// 1 product = 15, exactly the xmm registers V8 allocates on x64. A 5x8 tile (36-38 GFLOP/s
// in isolation vs ~32) spills two accumulators once inlined into the driver loop.
const MR: i32 = 4;
const NR: i32 = 8;

// Problem descriptor (i32 words). op(A)[i][p] = A[i*aRs + p*aCs], op(B)[p][j] = B[p*bRs + j*bCs],
// strides in elements, pointers in bytes.
const D_A: i32 = 0;
const D_ARS: i32 = 1;
const D_ACS: i32 = 2;
const D_B: i32 = 3;
const D_BRS: i32 = 4;
const D_BCS: i32 = 5;
const D_BP: i32 = 6; // packed B
const D_C: i32 = 7;
const D_LDC: i32 = 8;
const D_M: i32 = 9;
const D_N: i32 = 10;
const D_K: i32 = 11;
const D_BETA: i32 = 12; // 1: C += product
const D_KC: i32 = 13; // depth of one packed slice
const D_READY: i32 = 14; // pack tasks of this problem's B finished so far (atomic)
const D_NPACK: i32 = 15; // pack tasks of this problem's B
const DESC_WORDS: i32 = 16;

// Control block (byte offsets); counters sit on separate cache lines.
const C_DESC: i32 = 0;
const C_NTASK: i32 = 4;
const C_TASK: i32 = 8;
const C_SCRATCH: i32 = 12;
const C_SCRATCH_STRIDE: i32 = 16;
const C_NEXT: i32 = 64; // next task to take
const C_COPIED: i32 = 128; // problems whose inputs the main thread has copied in

// Task: kind, problem, row0, rows, strip0, strips, (compute) problem that owns the packed B.
const TASK_WORDS: i32 = 8;
const T_PACK: i32 = 0;
const T_COMPUTE: i32 = 1;
const T_FUSED: i32 = 2;

// Strips per L2-resident chunk of packed B (32 x KC x NR floats = 256 KiB at KC = 256).
const NC_STRIPS: i32 = 32;

// Scratch per thread (bytes; must match SCRATCH_STRIDE in ../index.ts): packed A block
// (MC x KC_MAX), packed B slice of a fused task (NC_STRIPS x KC_MAX x NR), one MR x NR tile.
const MC: i32 = 128;
const KC_MAX: i32 = 256;
const S_BLOC: i32 = MC * KC_MAX * 4;
const S_TILE: i32 = S_BLOC + NC_STRIPS * KC_MAX * NR * 4;

@inline function ld(d: usize, f: i32): i32 {
  return load<i32>(d + (<usize>f << 2));
}

@inline function madd(a: v128, b: v128, c: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) {
    return f32x4.relaxed_madd(a, b, c);
  } else {
    return f32x4.add(c, f32x4.mul(a, b));
  }
}

// C[MR x NR] (+)= sum_p Ap[p][0..MR) (x) Bp[p][0..NR). ap: kc x MR floats, bp: kc x NR floats.
// ldc in bytes. Deliberately not unrolled: with an unrolled body the hoisted loads of several
// k steps no longer fit in registers and accumulators spill.
function kernel4x8(ap: usize, bp: usize, kc: i32, c: usize, ldc: usize, beta: bool): void {
  let c00 = f32x4.splat(0);
  let c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
  let p = kc;
  while (p > 0) {
    const b0 = v128.load(bp, 0);
    const b1 = v128.load(bp, 16);
    let a = v128.load32_splat(ap, 0);
    c00 = madd(a, b0, c00); c01 = madd(a, b1, c01);
    a = v128.load32_splat(ap, 4);
    c10 = madd(a, b0, c10); c11 = madd(a, b1, c11);
    a = v128.load32_splat(ap, 8);
    c20 = madd(a, b0, c20); c21 = madd(a, b1, c21);
    a = v128.load32_splat(ap, 12);
    c30 = madd(a, b0, c30); c31 = madd(a, b1, c31);
    ap += 16;
    bp += 32;
    p -= 1;
  }
  const c1 = c + ldc;
  const c2 = c1 + ldc;
  const c3 = c2 + ldc;
  if (beta) {
    c00 = f32x4.add(c00, v128.load(c, 0)); c01 = f32x4.add(c01, v128.load(c, 16));
    c10 = f32x4.add(c10, v128.load(c1, 0)); c11 = f32x4.add(c11, v128.load(c1, 16));
    c20 = f32x4.add(c20, v128.load(c2, 0)); c21 = f32x4.add(c21, v128.load(c2, 16));
    c30 = f32x4.add(c30, v128.load(c3, 0)); c31 = f32x4.add(c31, v128.load(c3, 16));
  }
  v128.store(c, c00, 0); v128.store(c, c01, 16);
  v128.store(c1, c10, 0); v128.store(c1, c11, 16);
  v128.store(c2, c20, 0); v128.store(c2, c21, 16);
  v128.store(c3, c30, 0); v128.store(c3, c31, 16);
}

// Stores the 4x4 transpose of rows r0..r3 as 4 consecutive vectors at dst, dst+stride, ...
@inline function transpose4Store(r0: v128, r1: v128, r2: v128, r3: v128, dst: usize, stride: usize): void {
  const x0 = v128.shuffle<f32>(r0, r1, 0, 4, 1, 5);
  const x1 = v128.shuffle<f32>(r0, r1, 2, 6, 3, 7);
  const y0 = v128.shuffle<f32>(r2, r3, 0, 4, 1, 5);
  const y1 = v128.shuffle<f32>(r2, r3, 2, 6, 3, 7);
  v128.store(dst, v128.shuffle<f32>(x0, y0, 0, 1, 4, 5));
  v128.store(dst + stride, v128.shuffle<f32>(x0, y0, 2, 3, 6, 7));
  v128.store(dst + 2 * stride, v128.shuffle<f32>(x1, y1, 0, 1, 4, 5));
  v128.store(dst + 3 * stride, v128.shuffle<f32>(x1, y1, 2, 3, 6, 7));
}

// Packs op(A)[row0 .. row0+rows) x [p0 .. p0+kc) into MR-row panels (kc x MR each, rows past
// the end zero).
function packA(d: usize, row0: i32, rows: i32, p0: i32, kc: i32, dst: usize): void {
  const a = <usize>ld(d, D_A);
  const rs = ld(d, D_ARS);
  const cs = ld(d, D_ACS);
  const PB: usize = <usize>MR << 2; // bytes per packed k step
  for (let i0 = 0; i0 < rows; i0 += MR) {
    const r = min(MR, rows - i0);
    const gi = row0 + i0;
    let p = 0;
    if (r == MR && cs == 1) {
      // rows contiguous along k: transpose 4x4 blocks
      const s0 = a + (<usize>(gi * rs + p0) << 2);
      const rb = <usize>rs << 2;
      for (; p + 4 <= kc; p += 4) {
        const src = s0 + (<usize>p << 2);
        transpose4Store(v128.load(src), v128.load(src + rb), v128.load(src + 2 * rb), v128.load(src + 3 * rb),
          dst + <usize>p * PB, PB);
      }
    } else if (r == MR && rs == 1) {
      // A transposed: the MR values of one k step are contiguous
      for (; p < kc; p++) {
        const src = a + (<usize>(gi + (p0 + p) * cs) << 2);
        v128.store(dst + <usize>p * PB, v128.load(src));
      }
    }
    for (; p < kc; p++) {
      const o = dst + <usize>p * PB;
      for (let rr = 0; rr < MR; rr++) {
        let v: f32 = 0;
        if (rr < r) v = load<f32>(a + (<usize>((gi + rr) * rs + (p0 + p) * cs) << 2));
        store<f32>(o + (<usize>rr << 2), v);
      }
    }
    dst += <usize>(MR * kc) << 2;
  }
}

// Packs rows [p0, p0+kc) of strips [s0, s0+ns) of op(B) (k x n) into kc x NR column strips
// (zero padded) at dst, dst + stride, ... (bytes).
function packB(d: usize, s0: i32, ns: i32, p0: i32, kc: i32, dst: usize, stride: usize): void {
  const b = <usize>ld(d, D_B);
  const rs = ld(d, D_BRS);
  const cs = ld(d, D_BCS);
  const n = ld(d, D_N);
  for (let s = s0; s < s0 + ns; s++) {
    const j0 = s * NR;
    const cols = min(NR, n - j0);
    let p = 0;
    if (cols == NR && cs == 1) {
      for (; p < kc; p++) {
        const src = b + (<usize>((p0 + p) * rs + j0) << 2);
        const o = dst + (<usize>p << 5);
        v128.store(o, v128.load(src));
        v128.store(o, v128.load(src, 16), 16);
      }
    } else if (cols == NR && rs == 1) {
      // B transposed: each output column is contiguous along k
      const cb = <usize>cs << 2;
      for (; p + 4 <= kc; p += 4) {
        const src = b + (<usize>(j0 * cs + p0 + p) << 2);
        const o = dst + (<usize>p << 5);
        transpose4Store(v128.load(src), v128.load(src + cb), v128.load(src + 2 * cb), v128.load(src + 3 * cb), o, 32);
        const src4 = src + 4 * cb;
        transpose4Store(v128.load(src4), v128.load(src4 + cb), v128.load(src4 + 2 * cb), v128.load(src4 + 3 * cb),
          o + 16, 32);
      }
    }
    for (; p < kc; p++) {
      const o = dst + (<usize>p << 5);
      for (let jj = 0; jj < NR; jj++) {
        let v: f32 = 0;
        if (jj < cols) v = load<f32>(b + (<usize>((p0 + p) * rs + (j0 + jj) * cs) << 2));
        store<f32>(o + (<usize>jj << 2), v);
      }
    }
    dst += stride;
  }
}

// C[row0 .. row0+rows) x strips [s0, s0+ns) (+)= op(A)[rows][p0 .. p0+kc) x packed B, whose
// strip s0 + t (kc x NR, this slice only) is at bs0 + t * bStride (bytes). rows <= MC.
function computeBlock(d: usize, row0: i32, rows: i32, s0: i32, ns: i32, p0: i32, kc: i32, beta: bool,
  bs0: usize, bStride: usize, abuf: usize, tile: usize): void {
  const n = ld(d, D_N);
  const c = <usize>ld(d, D_C);
  const ldc = <usize>ld(d, D_LDC) << 2;
  packA(d, row0, rows, p0, kc, abuf);
  // Strips in chunks whose packed B slice fits L2; within a chunk one A panel (L1) sweeps
  // the strips, so C is written row-contiguously (column-wise sweeps over C thrash the TLB).
  for (let sc = 0; sc < ns; sc += NC_STRIPS) {
    const se = min(sc + NC_STRIPS, ns);
    for (let i0 = 0; i0 < rows; i0 += MR) {
      const r = min(MR, rows - i0);
      const ap = abuf + (<usize>(i0 * kc) << 2);
      const crow0 = c + <usize>(row0 + i0) * ldc;
      for (let t = sc; t < se; t++) {
        const bs = bs0 + <usize>t * bStride;
        const j0 = (s0 + t) * NR;
        const cols = min(NR, n - j0);
        const cp = crow0 + (<usize>j0 << 2);
        if (r == MR && cols == NR) {
          kernel4x8(ap, bs, kc, cp, ldc, beta);
        } else {
          kernel4x8(ap, bs, kc, tile, NR * 4, false);
          for (let rr = 0; rr < r; rr++) {
            const crow = cp + <usize>rr * ldc;
            const trow = tile + (<usize>(rr * NR) << 2);
            for (let jj = 0; jj < cols; jj++) {
              const co = crow + (<usize>jj << 2);
              let v = load<f32>(trow + (<usize>jj << 2));
              if (beta) v += load<f32>(co);
              store<f32>(co, v);
            }
          }
        }
      }
    }
  }
}

// Compute task on the shared packed B (strip s: k x NR at bp + s*k*NR floats).
function computeTask(d: usize, row0: i32, rows: i32, s0: i32, ns: i32, abuf: usize, tile: usize): void {
  const k = ld(d, D_K);
  const kcMax = ld(d, D_KC);
  const bp = <usize>ld(d, D_BP);
  const beta = ld(d, D_BETA) != 0;
  const bStride = <usize>(k * NR) << 2;
  for (let p0 = 0; p0 < k; p0 += kcMax) {
    const kc = min(kcMax, k - p0);
    computeBlock(d, row0, rows, s0, ns, p0, kc, beta || p0 > 0, bp + (<usize>((s0 * k + p0) * NR) << 2), bStride,
      abuf, tile);
  }
}

// Fused task: per KC slice, packs strips [s0, s0+ns) (ns <= NC_STRIPS) of B into bloc (L2),
// then runs every MC-row block of rows [row0, row0+rows) on it.
function fusedTask(d: usize, row0: i32, rows: i32, s0: i32, ns: i32, abuf: usize, bloc: usize, tile: usize): void {
  const k = ld(d, D_K);
  const kcMax = ld(d, D_KC);
  const beta = ld(d, D_BETA) != 0;
  for (let p0 = 0; p0 < k; p0 += kcMax) {
    const kc = min(kcMax, k - p0);
    const bStride = <usize>(kc * NR) << 2;
    packB(d, s0, ns, p0, kc, bloc, bStride);
    for (let r0 = 0; r0 < rows; r0 += MC) {
      computeBlock(d, row0 + r0, min(MC, rows - r0), s0, ns, p0, kc, beta || p0 > 0, bloc, bStride, abuf, tile);
    }
  }
}

// Waits until the i32 at addr is >= target: a short spin (the producer is usually nearly
// done), then memory.atomic.wait (the producer notifies; the timeout only bounds a lost wake).
function waitAtLeast(addr: usize, target: i32): void {
  let spins = 0;
  while (true) {
    const v = atomic.load<i32>(addr);
    if (v >= target) return;
    if (++spins < 2000) continue;
    atomic.wait<i32>(addr, v, 1000000);
  }
}

// Per-thread entry point: drains the task queue. scratch (per thread): see S_BLOC, S_TILE.
export function run(ctrl: usize, tid: i32): void {
  const desc = <usize>load<i32>(ctrl + C_DESC);
  const nTask = load<i32>(ctrl + C_NTASK);
  const tasks = <usize>load<i32>(ctrl + C_TASK);
  const abuf = <usize>load<i32>(ctrl + C_SCRATCH) + <usize>tid * <usize>load<i32>(ctrl + C_SCRATCH_STRIDE);
  const bloc = abuf + <usize>S_BLOC;
  const tile = abuf + <usize>S_TILE;
  let copied = 0;
  while (true) {
    const t = atomic.add<i32>(ctrl + C_NEXT, 1);
    if (t >= nTask) break;
    const tp = tasks + (<usize>(t * TASK_WORDS) << 2);
    const kind = load<i32>(tp);
    const pi = load<i32>(tp, 4);
    // Tasks are in problem order, and the main thread copies the inputs in that order.
    if (pi >= copied) {
      waitAtLeast(ctrl + C_COPIED, pi + 1);
      copied = atomic.load<i32>(ctrl + C_COPIED);
    }
    const d = desc + (<usize>(pi * DESC_WORDS) << 2);
    if (kind == T_PACK) {
      const k = ld(d, D_K);
      const s0 = load<i32>(tp, 16);
      packB(d, s0, load<i32>(tp, 20), 0, k, <usize>ld(d, D_BP) + (<usize>(s0 * k * NR) << 2), <usize>(k * NR) << 2);
      const r = d + (<usize>D_READY << 2);
      if (atomic.add<i32>(r, 1) + 1 == ld(d, D_NPACK)) atomic.notify(r);
    } else if (kind == T_COMPUTE) {
      const od = desc + (<usize>(load<i32>(tp, 24) * DESC_WORDS) << 2);
      waitAtLeast(od + (<usize>D_READY << 2), ld(od, D_NPACK));
      computeTask(d, load<i32>(tp, 8), load<i32>(tp, 12), load<i32>(tp, 16), load<i32>(tp, 20), abuf, tile);
    } else { // T_FUSED
      fusedTask(d, load<i32>(tp, 8), load<i32>(tp, 12), load<i32>(tp, 16), load<i32>(tp, 20), abuf, bloc, tile);
    }
  }
}
