/** The static server behind `npm run playground`: isolation headers on request, content types, no escape from its folder. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { repoRoot } from './helpers.js';

interface ServeModule {
  serveStatic(root: string, o: { port?: number; isolated?: boolean }): Promise<{ url: string; close(): Promise<void> }>;
}

test('serves files with COOP/COEP when isolated, without them otherwise, and nothing outside its folder', async () => {
  const { serveStatic } = (await import(pathToFileURL(path.join(repoRoot, 'scripts', 'serve-static.mjs')).href)) as ServeModule;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'moe-serve-'));
  const site = path.join(dir, 'site');
  fs.mkdirSync(site);
  fs.writeFileSync(path.join(site, 'index.html'), '<p>hi</p>');
  fs.writeFileSync(path.join(site, 'k.wasm'), new Uint8Array([0, 97, 115, 109]));
  fs.writeFileSync(path.join(dir, 'secret.txt'), 'outside');
  try {
    for (const isolated of [true, false]) {
      const s = await serveStatic(site, { port: 0, isolated });
      try {
        const r = await fetch(s.url);
        assert.equal(r.status, 200);
        assert.equal(await r.text(), '<p>hi</p>');
        assert.equal(r.headers.get('content-type'), 'text/html; charset=utf-8');
        assert.equal(r.headers.get('cross-origin-opener-policy'), isolated ? 'same-origin' : null);
        assert.equal(r.headers.get('cross-origin-embedder-policy'), isolated ? 'require-corp' : null);
        assert.equal((await fetch(s.url + 'k.wasm')).headers.get('content-type'), 'application/wasm');
        assert.equal((await fetch(s.url + 'missing.js')).status, 404);
        for (const p of ['../secret.txt', '%2e%2e/secret.txt', '..%2fsecret.txt']) {
          const res = await fetch(s.url + p);
          assert.notEqual(res.status, 200, p);
          assert.doesNotMatch(await res.text(), /outside/, p);
        }
      } finally {
        await s.close();
      }
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
