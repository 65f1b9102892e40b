// A tiny static file server for the browser build: serves one folder on localhost, with the
// COOP/COEP headers that make the page cross-origin isolated (SharedArrayBuffer, so the wasm
// kernels can use threads) unless `isolated` is false. Used by `npm run playground`, the browser
// tests and the browser bench.
import { createServer } from 'node:http';
import { createReadStream, statSync } from 'node:fs';
import { extname, join, normalize, sep } from 'node:path';

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.map': 'application/json',
  '.wasm': 'application/wasm',
  '.txt': 'text/plain; charset=utf-8',
  '.png': 'image/png',
  '.safetensors': 'application/octet-stream',
};

/** Serve `root`; resolves to { url, close() } once listening (port 0 picks a free one). */
export function serveStatic(root, { port = 0, host = '127.0.0.1', isolated = true } = {}) {
  const base = normalize(root + sep);
  const server = createServer((req, res) => {
    const headers = { 'Cache-Control': 'no-store' };
    if (isolated) {
      headers['Cross-Origin-Opener-Policy'] = 'same-origin';
      headers['Cross-Origin-Embedder-Policy'] = 'require-corp';
      headers['Cross-Origin-Resource-Policy'] = 'same-origin';
    }
    let path;
    try {
      path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    } catch {
      res.writeHead(400, headers).end('bad URL');
      return;
    }
    if (path.endsWith('/')) path += 'index.html';
    const file = normalize(join(base, path));
    if (!file.startsWith(base)) {
      res.writeHead(403, headers).end('forbidden');
      return;
    }
    let st;
    try {
      st = statSync(file);
    } catch {
      st = null;
    }
    if (!st || !st.isFile()) {
      res.writeHead(404, { ...headers, 'Content-Type': 'text/plain' }).end(`not found: ${path}`);
      return;
    }
    res.writeHead(200, { ...headers, 'Content-Type': TYPES[extname(file)] ?? 'application/octet-stream', 'Content-Length': st.size });
    if (req.method === 'HEAD') res.end();
    else createReadStream(file).pipe(res);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      const a = server.address();
      resolve({ url: `http://${host === '0.0.0.0' ? 'localhost' : host}:${a.port}/`, close: () => new Promise((r) => server.close(() => r())) });
    });
  });
}
