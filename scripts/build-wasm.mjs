// Compiles the AssemblyScript GEMM kernels (src/kernels/wasm/assembly) to
// dist/src/kernels/wasm/kernels.wasm (baseline: WebAssembly SIMD + threads) and
// kernels-relaxed.wasm (adds relaxed-SIMD fused multiply-add; the loader picks it only where
// the engine validates it by default), and kernels-single.wasm (baseline, importing a non-shared
// memory: the single-threaded fallback for browsers that refuse shared memory outside
// cross-origin isolated pages). Run by `npm run build` before tsc.
import asc from 'assemblyscript/asc';
import { mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const src = join(root, 'src/kernels/wasm/assembly/kernels.ts');
const outDir = join(root, 'dist/src/kernels/wasm');
mkdirSync(outDir, { recursive: true });

const common = [src, '-O3', '--noAssert', '--runtime', 'stub', '--importMemory', '--initialMemory', '32', '--maximumMemory', '65536', '--uncheckedBehavior', 'always', '--use', 'abort='];

const variants = [
  { file: 'kernels.wasm', features: 'simd,threads', shared: true },
  { file: 'kernels-relaxed.wasm', features: 'simd,threads,relaxed-simd', shared: true },
  // atomics on unshared memory are valid; single-threaded they never wait
  { file: 'kernels-single.wasm', features: 'simd,threads', shared: false },
];

for (const v of variants) {
  const args = [...common, ...(v.shared ? ['--sharedMemory'] : []), '--enable', v.features, '--outFile', join(outDir, v.file)];
  if (process.argv.includes('--wat')) args.push('--textFile', join(outDir, v.file.replace('.wasm', '.wat')));
  const { error, stderr } = await asc.main(args);
  if (error) {
    console.error(stderr.toString());
    console.error(`build-wasm: compiling ${v.file} failed: ${error.message}`);
    process.exit(1);
  }
  console.log(`build-wasm: wrote ${join('dist/src/kernels/wasm', v.file)}`);
}

// quantised matrix kernels (src/kernels/wasm/quant.ts loads them): single-threaded, unshared memory
{
  const qsrc = join(root, 'src/kernels/wasm/assembly/quant.ts');
  const args = [
    qsrc,
    '-O3',
    '--noAssert',
    '--runtime',
    'stub',
    '--importMemory',
    '--initialMemory',
    '32',
    '--maximumMemory',
    '65536',
    '--uncheckedBehavior',
    'always',
    '--use',
    'abort=',
    '--enable',
    'simd',
    '--outFile',
    join(outDir, 'quant.wasm'),
  ];
  if (process.argv.includes('--wat')) args.push('--textFile', join(outDir, 'quant.wat'));
  const { error, stderr } = await asc.main(args);
  if (error) {
    console.error(stderr.toString());
    console.error(`build-wasm: compiling quant.wasm failed: ${error.message}`);
    process.exit(1);
  }
  console.log('build-wasm: wrote dist/src/kernels/wasm/quant.wasm');
}
