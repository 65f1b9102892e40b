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
