// WebAssembly SIMD kernels for quantised matrices (AssemblyScript; built by scripts/build-wasm.mjs
// into quant.wasm, single-threaded, importing an unshared growable memory).
//
// Weights stay in ggml's block layout (see ../../quant.ts): q8_0 blocks of 34 bytes (f16 scale,
// 32 int8), q4_0 blocks of 18 bytes (f16 scale, 16 bytes of nibbles, low nibble = value j, high
// nibble = value j + 16). Activations arrive quantised to q8_0 by the JS side (int8 values plus
// one f32 scale per block). Each block's dot product is integer (i16 products summed pairwise by
// i32x4.dot_i16x8_s), scaled by d_w * d_x and accumulated in f32 lanes.
// f16 scales are converted by a 65536-entry f32 table the JS side writes at `f16tab`.
// No allocation happens here: all pointers come from the JS side.

@inline function blockDot8(w: usize, x: usize): v128 {
  const w0 = v128.load(w);
  const w1 = v128.load(w, 16);
  const x0 = v128.load(x);
  const x1 = v128.load(x, 16);
  let acc = i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_s(w0), i16x8.extend_low_i8x16_s(x0));
  acc = i32x4.add(acc, i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_s(w0), i16x8.extend_high_i8x16_s(x0)));
  acc = i32x4.add(acc, i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_s(w1), i16x8.extend_low_i8x16_s(x1)));
  return i32x4.add(acc, i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_s(w1), i16x8.extend_high_i8x16_s(x1)));
}

@inline function blockDot4(w: usize, x: usize): v128 {
  const q = v128.load(w);
  const eight = i8x16.splat(8);
  const lo = i8x16.sub(v128.and(q, i8x16.splat(15)), eight);
  const hi = i8x16.sub(i8x16.shr_u(q, 4), eight);
  const x0 = v128.load(x);
  const x1 = v128.load(x, 16);
  let acc = i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_s(lo), i16x8.extend_low_i8x16_s(x0));
  acc = i32x4.add(acc, i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_s(lo), i16x8.extend_high_i8x16_s(x0)));
  acc = i32x4.add(acc, i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_s(hi), i16x8.extend_low_i8x16_s(x1)));
  return i32x4.add(acc, i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_s(hi), i16x8.extend_high_i8x16_s(x1)));
}

@inline function hsum(v: v128): f32 {
  return f32x4.extract_lane(v, 0) + f32x4.extract_lane(v, 1) + (f32x4.extract_lane(v, 2) + f32x4.extract_lane(v, 3));
}

// out[t * ldo + r] (+)= sum_c W[r, c] x[t, c] for q8_0 (fmt 1) or q4_0 (fmt 2) weights of
// `rows` x `cols`, activations xq (int8, n x cols) with scales xd (f32, n x cols/32).
export function qmatmul(fmt: i32, w: usize, rows: i32, cols: i32, xq: usize, xd: usize, n: i32, out: usize, ldo: i32, acc: i32, f16tab: usize): void {
  const nb = cols >> 5;
  const bsz: i32 = fmt == 1 ? 34 : 18;
  const rowBytes = <usize>(nb * bsz);
  for (let r = 0; r < rows; r++) {
    const rw = w + <usize>r * rowBytes;
    for (let t = 0; t < n; t++) {
      let s = f32x4.splat(0);
      const xt = xq + <usize>(t * cols);
      const dt = xd + (<usize>(t * nb) << 2);
      for (let b = 0; b < nb; b++) {
        const blk = rw + <usize>(b * bsz);
        const dw = load<f32>(f16tab + (<usize>load<u16>(blk) << 2));
        const dx = load<f32>(dt + (<usize>b << 2));
        const isum = fmt == 1 ? blockDot8(blk + 2, xt + (<usize>b << 5)) : blockDot4(blk + 2, xt + (<usize>b << 5));
        s = f32x4.add(s, f32x4.mul(f32x4.convert_i32x4_s(isum), f32x4.splat(dw * dx)));
      }
      const o = out + (<usize>(t * ldo + r) << 2);
      const v = hsum(s);
      if (acc) store<f32>(o, load<f32>(o) + v);
      else store<f32>(o, v);
    }
  }
}

// The f32 case of the same product: W [rows, cols] f32, x [n, cols] f32.
export function fmatmul(w: usize, rows: i32, cols: i32, x: usize, n: i32, out: usize, ldo: i32, acc: i32): void {
  const c4 = cols & ~7;
  for (let r = 0; r < rows; r++) {
    const rw = w + (<usize>(r * cols) << 2);
    for (let t = 0; t < n; t++) {
      const xt = x + (<usize>(t * cols) << 2);
      let s0 = f32x4.splat(0);
      let s1 = f32x4.splat(0);
      let c = 0;
      for (; c < c4; c += 8) {
        const off = <usize>c << 2;
        s0 = f32x4.add(s0, f32x4.mul(v128.load(rw + off), v128.load(xt + off)));
        s1 = f32x4.add(s1, f32x4.mul(v128.load(rw + off, 16), v128.load(xt + off, 16)));
      }
      let v = hsum(f32x4.add(s0, s1));
      for (; c < cols; c++) v += load<f32>(rw + (<usize>c << 2)) * load<f32>(xt + (<usize>c << 2));
      const o = out + (<usize>(t * ldo + r) << 2);
      if (acc) store<f32>(o, load<f32>(o) + v);
      else store<f32>(o, v);
    }
  }
}

// ---- prepared activations (qmatmulActs / fmatmulActs) ----
// A prepared activation row of `cols` values: the q8_0 ints widened to i16 and permuted per
// block of 32 so that both weight formats unpack straight into i16 lanes without extends: block
// values [0,2,..,14], [1,3,..,15], [16,18,..,30], [17,19,..,31] (4 x i16x8 = 64 bytes), matching a
// q8_0 half's bytes read as i16 lanes (low byte = even value, high byte = odd value) and a q4_0
// block's 16 nibble bytes read as i16 lanes (low nibbles of the even / odd byte, then the high
// ones). Per block also: its f32 scale dx, and an i32x4 q4_0 offset correction (lane k: 8 times
// the sum of the values that meet lane k), so q4_0 nibbles need no "- 8".
// xs: i16 [n, cols]; xd: f32 [n, cols/32]; xc: i32x4 [n, cols/32]; idx: i32 [n] source rows, or 0 for 0..n-1.

@inline function unpack8(blk: usize, k: i32): v128 {
  // k: 0 = even values of the first half, 1 = odd, 2 / 3 the same for the second half
  const v = v128.load(blk + 2 + (<usize>(k >> 1) << 4));
  return (k & 1) == 0 ? i16x8.shr_s(i16x8.shl(v, 8), 8) : i16x8.shr_s(v, 8);
}

@inline function rowOf(idx: usize, t: i32): i32 {
  return idx ? load<i32>(idx + (<usize>t << 2)) : t;
}

// out[t * ldo + r] (+)= sum_c W[r, c] x[idx[t], c]; weights q8_0 (fmt 1) or q4_0 (fmt 2).
export function qmatmulActs(fmt: i32, w: usize, rows: i32, cols: i32, xs: usize, xd: usize, xc: usize, n: i32, idx: usize, out: usize, ldo: i32, acc: i32, f16tab: usize): void {
  const nb = cols >> 5;
  const bsz: i32 = fmt == 1 ? 34 : 18;
  const rowBytes = <usize>(nb * bsz);
  const mask = i16x8.splat(15);
  const n4 = n & ~3;
  for (let r = 0; r < rows; r++) {
    const rw = w + <usize>r * rowBytes;
    // tiles of 4 activation rows: each weight block is unpacked once for the 4
    for (let t = 0; t < n4; t += 4) {
      const r0 = rowOf(idx, t);
      const r1 = rowOf(idx, t + 1);
      const r2 = rowOf(idx, t + 2);
      const r3 = rowOf(idx, t + 3);
      const x0 = xs + (<usize>(r0 * cols) << 1);
      const x1 = xs + (<usize>(r1 * cols) << 1);
      const x2 = xs + (<usize>(r2 * cols) << 1);
      const x3 = xs + (<usize>(r3 * cols) << 1);
      let s0 = f32x4.splat(0);
      let s1 = f32x4.splat(0);
      let s2 = f32x4.splat(0);
      let s3 = f32x4.splat(0);
      for (let b = 0; b < nb; b++) {
        const blk = rw + <usize>(b * bsz);
        const dw = load<f32>(f16tab + (<usize>load<u16>(blk) << 2));
        let a: v128, bq: v128, c: v128, e: v128;
        if (fmt == 1) {
          a = unpack8(blk, 0);
          bq = unpack8(blk, 1);
          c = unpack8(blk, 2);
          e = unpack8(blk, 3);
        } else {
          const q = v128.load(blk + 2);
          a = v128.and(q, mask);
          bq = v128.and(i16x8.shr_u(q, 8), mask);
          c = v128.and(i16x8.shr_u(q, 4), mask);
          e = i16x8.shr_u(q, 12);
        }
        const bo = <usize>b << 6;
        // one activation row at a time, so that few vectors are live at once (no spills)
        s0 = f32x4.add(s0, tileTerm(fmt, a, bq, c, e, x0 + bo, xc, xd, <usize>(r0 * nb + b), dw));
        s1 = f32x4.add(s1, tileTerm(fmt, a, bq, c, e, x1 + bo, xc, xd, <usize>(r1 * nb + b), dw));
        s2 = f32x4.add(s2, tileTerm(fmt, a, bq, c, e, x2 + bo, xc, xd, <usize>(r2 * nb + b), dw));
        s3 = f32x4.add(s3, tileTerm(fmt, a, bq, c, e, x3 + bo, xc, xd, <usize>(r3 * nb + b), dw));
      }
      storeOut(out, t * ldo + r, hsum(s0), acc);
      storeOut(out, (t + 1) * ldo + r, hsum(s1), acc);
      storeOut(out, (t + 2) * ldo + r, hsum(s2), acc);
      storeOut(out, (t + 3) * ldo + r, hsum(s3), acc);
    }
    for (let t = n4; t < n; t++) {
      const rt = rowOf(idx, t);
      const xt = xs + (<usize>(rt * cols) << 1);
      let s = f32x4.splat(0);
      for (let b = 0; b < nb; b++) {
        const blk = rw + <usize>(b * bsz);
        const dw = load<f32>(f16tab + (<usize>load<u16>(blk) << 2));
        const bo = xt + (<usize>b << 6);
        const p = <usize>(rt * nb + b);
        let i0: v128;
        if (fmt == 1) {
          const v0 = v128.load(blk + 2);
          const v1 = v128.load(blk + 18);
          i0 = i32x4.add(
            i32x4.add(i32x4.dot_i16x8_s(i16x8.shr_s(i16x8.shl(v0, 8), 8), v128.load(bo)), i32x4.dot_i16x8_s(i16x8.shr_s(v0, 8), v128.load(bo, 16))),
            i32x4.add(i32x4.dot_i16x8_s(i16x8.shr_s(i16x8.shl(v1, 8), 8), v128.load(bo, 32)), i32x4.dot_i16x8_s(i16x8.shr_s(v1, 8), v128.load(bo, 48))),
          );
        } else {
          const q = v128.load(blk + 2);
          i0 = i32x4.add(
            i32x4.add(i32x4.dot_i16x8_s(v128.and(q, mask), v128.load(bo)), i32x4.dot_i16x8_s(v128.and(i16x8.shr_u(q, 8), mask), v128.load(bo, 16))),
            i32x4.add(i32x4.dot_i16x8_s(v128.and(i16x8.shr_u(q, 4), mask), v128.load(bo, 32)), i32x4.dot_i16x8_s(i16x8.shr_u(q, 12), v128.load(bo, 48))),
          );
          i0 = i32x4.sub(i0, v128.load(xc + (p << 4)));
        }
        s = f32x4.add(s, f32x4.mul(f32x4.convert_i32x4_s(i0), f32x4.splat(dw * load<f32>(xd + (p << 2)))));
      }
      storeOut(out, t * ldo + r, hsum(s), acc);
    }
  }
}

// One activation row's term of a tile: the unpacked weight block (a, bq, c, e) against its
// permuted i16 block at x, scaled by dw * dx (q4_0: minus the offset correction first).
@inline function tileTerm(fmt: i32, a: v128, bq: v128, c: v128, e: v128, x: usize, xc: usize, xd: usize, p: usize, dw: f32): v128 {
  let i = i32x4.add(i32x4.add(i32x4.dot_i16x8_s(a, v128.load(x)), i32x4.dot_i16x8_s(bq, v128.load(x, 16))), i32x4.add(i32x4.dot_i16x8_s(c, v128.load(x, 32)), i32x4.dot_i16x8_s(e, v128.load(x, 48))));
  if (fmt == 2) i = i32x4.sub(i, v128.load(xc + (p << 4)));
  return f32x4.mul(f32x4.convert_i32x4_s(i), f32x4.splat(dw * load<f32>(xd + (p << 2))));
}

@inline function storeOut(out: usize, i: i32, v: f32, acc: i32): void {
  const o = out + (<usize>i << 2);
  if (acc) store<f32>(o, load<f32>(o) + v);
  else store<f32>(o, v);
}

// The f32 case on prepared activations: x f32 [*, cols], rows idx[t] (or t).
export function fmatmulActs(w: usize, rows: i32, cols: i32, x: usize, n: i32, idx: usize, out: usize, ldo: i32, acc: i32): void {
  const c8 = cols & ~7;
  for (let r = 0; r < rows; r++) {
    const rw = w + (<usize>(r * cols) << 2);
    for (let t = 0; t < n; t++) {
      const xt = x + (<usize>(rowOf(idx, t) * cols) << 2);
      let s0 = f32x4.splat(0);
      let s1 = f32x4.splat(0);
      let c = 0;
      for (; c < c8; c += 8) {
        const off = <usize>c << 2;
        s0 = f32x4.add(s0, f32x4.mul(v128.load(rw + off), v128.load(xt + off)));
        s1 = f32x4.add(s1, f32x4.mul(v128.load(rw + off, 16), v128.load(xt + off, 16)));
      }
      let v = hsum(f32x4.add(s0, s1));
      for (; c < cols; c++) v += load<f32>(rw + (<usize>c << 2)) * load<f32>(xt + (<usize>c << 2));
      storeOut(out, t * ldo + r, v, acc);
    }
  }
}
