// The package as users get it (issue 8, case 11): `npm pack`, unpacked into an empty project's
// node_modules next to its declared dependencies only (offline: linked from this checkout's
// node_modules, since the npm cache here does not hold them), then the README's library example
// runs as written and the CLI starts. Also keeps the README's stated installed size honest.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { dependencies: Record<string, string>; files: string[] };

function dirBytes(p: string): number {
  const st = fs.lstatSync(p);
  if (!st.isDirectory()) return st.size;
  let n = 0;
  for (const f of fs.readdirSync(p)) n += dirBytes(path.join(p, f));
  return n;
}

/** The production dependency closure, as directories of this checkout's node_modules. */
function prodDeps(): string[] {
  const seen = new Set<string>();
  const todo = Object.keys(pkg.dependencies);
  while (todo.length > 0) {
    const name = todo.pop()!;
    if (seen.has(name)) continue;
    seen.add(name);
    const pj = JSON.parse(fs.readFileSync(path.join(ROOT, 'node_modules', name, 'package.json'), 'utf8')) as { dependencies?: Record<string, string> };
    todo.push(...Object.keys(pj.dependencies ?? {}));
  }
  return [...seen];
}

test('npm pack: the README library example and the CLI run from the packed files; the stated installed size holds', { skip: process.platform === 'win32' ? 'needs tar and symlinks' : false }, () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'moe-ts-pack-'));
  const packed = spawnSync('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', tmp], { cwd: ROOT, encoding: 'utf8', timeout: 120_000 });
  assert.equal(packed.status, 0, packed.stderr);
  const info = (JSON.parse(packed.stdout) as { filename: string; unpackedSize: number; files: { path: string }[] }[])[0];
  const files = info.files.map((f) => f.path);
  assert.ok(files.includes('dist/src/index.js') && files.includes('dist/src/node.js') && files.includes('dist/src/kernels/wasm/kernels.wasm'), 'library entry points and wasm kernels are packed');
  assert.ok(!files.some((f) => f.startsWith('dist/test/') || f.startsWith('src/') || /\.test\./.test(f)), 'no tests or sources in the package');
  // issue 10: the three corpora the defaults use (train, bench-routers) are in the package, with their sources and licenses
  for (const f of ['data/shakespeare.txt', 'data/wikitext2-valid.txt', 'data/linux-train.txt', 'data/linux-valid.txt', 'data/SOURCES.md']) {
    assert.ok(files.includes(f), `${f} is packed`);
  }

  // an empty project with moe-ts unpacked and only its declared dependencies beside it
  const proj = path.join(tmp, 'proj');
  const nm = path.join(proj, 'node_modules');
  fs.mkdirSync(nm, { recursive: true });
  fs.writeFileSync(path.join(proj, 'package.json'), JSON.stringify({ name: 'user-project', version: '1.0.0', type: 'module', dependencies: { 'moe-ts': '*' } }));
  const tar = spawnSync('tar', ['-xzf', path.join(tmp, info.filename), '-C', nm], { encoding: 'utf8' });
  assert.equal(tar.status, 0, tar.stderr);
  fs.renameSync(path.join(nm, 'package'), path.join(nm, 'moe-ts'));
  for (const dep of Object.keys(pkg.dependencies)) {
    fs.mkdirSync(path.dirname(path.join(nm, dep)), { recursive: true });
    fs.symlinkSync(path.join(ROOT, 'node_modules', dep), path.join(nm, dep), 'dir');
  }

  // the README's example, exactly as written (it is plain JavaScript too)
  const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  const example = /```ts\n(import [^`]*?from 'moe-ts';[^`]*?)```/.exec(readme)?.[1];
  assert.ok(example, 'README has a library example importing moe-ts');
  fs.writeFileSync(path.join(proj, 'example.mjs'), example);
  const env = { ...process.env };
  delete env.MOE_BACKEND;
  delete env.MOE_DATA_DIR;
  const r = spawnSync(process.execPath, ['example.mjs'], { cwd: proj, encoding: 'utf8', env, timeout: 60_000 });
  assert.equal(r.status, 0, `README example failed: ${r.stderr}`);
  // tokensPerExpert (8 counts summing to 16 tokens x top-2) and the load CV
  const nums = (r.stdout.replace(/\w+Array\(\d+\)/g, '').match(/-?\d+(\.\d+)?(e-?\d+)?/g) ?? []).map(Number);
  assert.equal(nums.length, 9, r.stdout);
  assert.equal(
    nums.slice(0, 8).reduce((a, b) => a + b, 0),
    32,
    r.stdout,
  );
  const cli = spawnSync(process.execPath, [path.join(nm, 'moe-ts', 'dist', 'src', 'cli', 'main.js'), 'routers'], { cwd: proj, encoding: 'utf8', env, timeout: 60_000 });
  assert.equal(cli.status, 0, cli.stderr);
  assert.match(cli.stdout, /topk/);
  // `moe-ts data` in the installed package finds every embedded corpus file (none missing, each its real size)
  const data = spawnSync(process.execPath, [path.join(nm, 'moe-ts', 'dist', 'src', 'cli', 'main.js'), 'data', '--json'], { cwd: proj, encoding: 'utf8', env, timeout: 60_000 });
  assert.equal(data.status, 0, data.stderr);
  const listed = JSON.parse(data.stdout) as { dir: string; corpora: { name: string; files: { file: string; bytes: number }[] }[] };
  assert.equal(fs.realpathSync(listed.dir), fs.realpathSync(path.join(nm, 'moe-ts', 'data')), 'corpora read from the installed package');
  assert.deepEqual(
    listed.corpora.map((c) => c.name),
    ['shakespeare', 'wikitext', 'linux'],
  );
  for (const c of listed.corpora) {
    for (const f of c.files) assert.equal(f.bytes, fs.statSync(path.join(ROOT, 'data', f.file)).size, `${c.name}: ${f.file} installed in full`);
  }

  // README: "installs about N MB": within 25% of moe-ts's unpacked size plus its dependency closure
  const stated = /`npm install moe-ts`[^.]*?installs about (\d+) MB/.exec(readme);
  assert.ok(stated, 'README states the installed size of npm install moe-ts');
  const measured = info.unpackedSize + prodDeps().reduce((s, d) => s + dirBytes(path.join(ROOT, 'node_modules', d)), 0);
  const mb = measured / 1e6;
  assert.ok(Math.abs(Number(stated[1]) - mb) / mb < 0.25, `README says ${stated[1]} MB, measured ${mb.toFixed(1)} MB`);
  fs.rmSync(tmp, { recursive: true, force: true });
});
