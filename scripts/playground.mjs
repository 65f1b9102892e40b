// `npm run playground`: builds the playground (web/playground -> dist/playground, a static folder
// any static host can serve) and serves it on localhost with the cross-origin isolation headers.
// Options: --port N (default 8080), --host H, --no-isolation (serve without COOP/COEP: the
// kernels then run single-threaded), --no-build (serve what is already built).
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execFileSync } from 'node:child_process';
import { buildPlayground } from './build-browser.mjs';
import { serveStatic } from './serve-static.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const argv = process.argv.slice(2);
const opt = (name, def) => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : def;
};
const port = Number(opt('--port', '8080'));
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`playground: --port must be an integer in [0, 65535], got ${opt('--port')}`);
  process.exit(2);
}
const isolated = !argv.includes('--no-isolation');
let out = join(root, 'dist/playground');
if (!argv.includes('--no-build')) {
  if (!existsSync(join(root, 'dist/src/kernels/wasm/kernels.wasm'))) execFileSync(process.execPath, [join(root, 'scripts/build-wasm.mjs')], { stdio: 'inherit' });
  out = await buildPlayground();
}
try {
  const { url } = await serveStatic(out, { port, host: opt('--host', '127.0.0.1'), isolated });
  console.log(`moe-ts playground: ${url}  (${isolated ? 'cross-origin isolated: wasm kernels on worker threads' : 'not isolated: single-threaded kernels'}; Ctrl-C stops)`);
} catch (e) {
  console.error(`playground: cannot listen on port ${port}: ${e.message} (try --port 0 for a free one)`);
  process.exit(1);
}
