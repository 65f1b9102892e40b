// Bundles moe-ts for browsers with esbuild: the library (src/browser.ts -> dist/browser/moe-ts.js)
// and the playground web app (web/playground -> dist/playground, a static folder). Each output
// folder also gets the wasm kernels and their Web Worker script (loaded relative to the bundle).
// A Node built-in reached by the bundled code fails the build, naming the importing file.
// Run by `npm run build` after build-wasm.mjs; `--playground-only` / `--lib-only` limit it.
import * as esbuild from 'esbuild';
import { copyFileSync, mkdirSync, existsSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const wasmDir = join(root, 'dist/src/kernels/wasm');
const NODE = new Set([...builtinModules, ...builtinModules.map((m) => `node:${m}`)]);

/**
 * Resolves Node built-ins to an empty module marked side-effect free: one that only dead code
 * uses (a file function next to a platform-neutral one) disappears; any use that survives tree
 * shaking is reported after the build.
 */
const nodeBuiltins = {
  name: 'node-builtins',
  setup(build) {
    build.onResolve({ filter: /^[a-z:_/]+$/ }, (args) => {
      if (!NODE.has(args.path)) return undefined;
      return { path: args.path, namespace: 'node-builtin', sideEffects: false, pluginData: { importer: args.importer } };
    });
    build.onLoad({ filter: /.*/, namespace: 'node-builtin' }, async (args) => {
      // the real module's export names, so named imports in dead code resolve without warnings
      const names = Object.keys(await import(args.path)).filter((k) => /^[A-Za-z_$][\w$]*$/.test(k) && k !== 'default');
      return {
        contents: `throw new Error(${JSON.stringify(`moe-ts browser bundle: Node built-in "${args.path}" was reached`)});\n${names.map((n) => `export const ${n} = undefined;`).join('\n')}\nexport default undefined;`,
        loader: 'js',
      };
    });
  },
};

function checkNoNode(result, what) {
  const bad = [];
  for (const [out, o] of Object.entries(result.metafile.outputs)) {
    for (const [input, i] of Object.entries(o.inputs)) {
      if (input.startsWith('node-builtin:') && i.bytesInOutput > 0) bad.push(`${input.slice('node-builtin:'.length)} in ${out}`);
    }
  }
  if (bad.length) {
    const importers = Object.entries(result.metafile.inputs)
      .filter(([, v]) => v.imports.some((im) => im.path.startsWith('node-builtin:') || NODE.has(im.path)))
      .map(([k]) => k);
    throw new Error(`${what}: Node built-ins reached the browser bundle: ${bad.join(', ')} (modules importing built-ins: ${importers.join(', ')})`);
  }
}

const common = {
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: 'es2022',
  sourcemap: true,
  metafile: true,
  logLevel: 'warning',
  legalComments: 'none',
  plugins: [nodeBuiltins],
};

function copyRuntime(outDir) {
  for (const f of ['kernels.wasm', 'kernels-relaxed.wasm', 'kernels-single.wasm']) {
    const src = join(wasmDir, f);
    if (!existsSync(src)) throw new Error(`build-browser: ${relative(root, src)} is missing; run "npm run build:wasm" first`);
    copyFileSync(src, join(outDir, f));
  }
}

/** Bundle `entryPoints` ({ outName: file }) into outDir for browsers; throws if a Node built-in survives. */
export async function bundle(entryPoints, outDir, what, extra = {}) {
  mkdirSync(outDir, { recursive: true });
  const r = await esbuild.build({ ...common, ...extra, entryPoints, outdir: outDir });
  checkNoNode(r, what);
  return r;
}

export async function buildLibrary(outDir = join(root, 'dist/browser')) {
  await bundle({ 'moe-ts': join(root, 'src/browser.ts'), 'web-worker': join(root, 'src/kernels/wasm/web-worker.ts') }, outDir, 'library bundle');
  copyRuntime(outDir);
  return outDir;
}

export async function buildPlayground(outDir = join(root, 'dist/playground')) {
  const web = join(root, 'web/playground');
  await bundle({ app: join(web, 'app.ts'), engine: join(web, 'engine.ts'), 'web-worker': join(root, 'src/kernels/wasm/web-worker.ts') }, outDir, 'playground bundle', { minify: true });
  copyRuntime(outDir);
  for (const f of ['index.html', 'style.css']) copyFileSync(join(web, f), join(outDir, f));
  copyFileSync(join(root, 'data/shakespeare.txt'), join(outDir, 'shakespeare.txt'));
  return outDir;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const t0 = performance.now();
  try {
    if (!process.argv.includes('--playground-only')) console.log(`build-browser: wrote ${relative(root, await buildLibrary())}`);
    if (!process.argv.includes('--lib-only')) console.log(`build-browser: wrote ${relative(root, await buildPlayground())}`);
  } catch (e) {
    console.error(`build-browser: ${e.message}`);
    process.exit(1);
  }
  console.log(`build-browser: done in ${Math.round(performance.now() - t0)} ms`);
}
