/**
 * The browser build without a browser: the package's `browser` export condition resolves to the
 * esbuild bundle, and the bundle check rejects live Node built-ins while keeping dead ones out.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import * as esbuild from 'esbuild';
import { repoRoot } from './helpers.js';

interface BuildScript {
  bundle(entries: Record<string, string>, outDir: string, what: string): Promise<esbuild.BuildResult & { metafile: esbuild.Metafile }>;
}
const script = (): Promise<BuildScript> => import(pathToFileURL(path.join(repoRoot, 'scripts', 'build-browser.mjs')).href) as Promise<BuildScript>;

function tmpEntry(code: string): { dir: string; file: string } {
  // inside the repository, so `moe-ts` resolves to this package (self-reference) and src/ relative imports work
  const dir = fs.mkdtempSync(path.join(repoRoot, 'dist', '.bundle-test-'));
  const file = path.join(dir, 'entry.ts');
  fs.writeFileSync(file, code);
  return { dir, file };
}

/** Where esbuild resolves `spec` from the repository root for `platform` (its export conditions). */
async function resolveFor(platform: 'browser' | 'node', spec: string): Promise<string> {
  let got = '';
  const plugin: esbuild.Plugin = {
    name: 'resolve-probe',
    setup(b) {
      b.onStart(async () => {
        const r = await b.resolve(spec, { kind: 'import-statement', resolveDir: repoRoot });
        got = r.errors.length ? `error: ${r.errors[0].text}` : r.path;
      });
    },
  };
  await esbuild.build({ stdin: { contents: '', resolveDir: repoRoot }, write: false, bundle: true, platform, logLevel: 'silent', plugins: [plugin] });
  return got.startsWith('error') ? got : path.relative(repoRoot, got);
}

test('"moe-ts" resolves to the browser bundle under the browser condition and to the Node build otherwise', async () => {
  assert.equal(await resolveFor('browser', 'moe-ts'), path.join('dist', 'browser', 'moe-ts.js'));
  assert.equal(await resolveFor('node', 'moe-ts'), path.join('dist', 'src', 'index.js'));
  assert.equal(await resolveFor('node', 'moe-ts/browser'), path.join('dist', 'browser', 'moe-ts.js'));
});

test('the bundle check fails on a live Node built-in, naming it, and drops dead ones', async () => {
  const { bundle } = await script();
  const src = path.join(repoRoot, 'src');
  const live = tmpEntry(`import { readFileSync } from 'node:fs';\nexport const read = (p: string) => readFileSync(p);\n`);
  const dead = tmpEntry(
    `import { checkpointFromBytes } from ${JSON.stringify(path.join(src, 'io', 'checkpoint-bytes.ts'))};\nimport { loadCheckpoint } from ${JSON.stringify(path.join(src, 'io', 'checkpoint.ts'))};\nexport const f = checkpointFromBytes;\nvoid loadCheckpoint;\n`,
  );
  try {
    await assert.rejects(() => bundle({ out: live.file }, path.join(live.dir, 'out'), 'test bundle'), /test bundle: Node built-ins reached the browser bundle: node:fs in /);
    // checkpoint.ts imports node:fs and node:path, but nothing live uses them
    const r = await bundle({ out: dead.file }, path.join(dead.dir, 'out'), 'test bundle');
    const outs = Object.values(r.metafile.outputs).filter((o) => o.entryPoint);
    assert.equal(outs.length, 1);
    assert.ok(Object.keys(outs[0].inputs).some((i) => i.endsWith('checkpoint-bytes.ts')));
  } finally {
    fs.rmSync(live.dir, { recursive: true, force: true });
    fs.rmSync(dead.dir, { recursive: true, force: true });
  }
});

test('the library bundle exists with its runtime files and no Node built-in code', () => {
  const dir = path.join(repoRoot, 'dist', 'browser');
  for (const f of ['moe-ts.js', 'web-worker.js', 'kernels.wasm', 'kernels-relaxed.wasm', 'kernels-single.wasm']) assert.ok(fs.existsSync(path.join(dir, f)), `${f} built`);
  const js = fs.readFileSync(path.join(dir, 'moe-ts.js'), 'utf8');
  assert.doesNotMatch(js, /was reached/, 'no Node built-in stub in the bundle');
  assert.doesNotMatch(js, /onnxruntime|worker_threads/);
});
