/** Shared set-up of the browser tests and bench: Debian's chromium via playwright-core, the static server over dist/. */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
/** The repository root (this file runs from dist/test/browser or dist/bench). */
export const repoRoot = path.resolve(here, '..', '..', '..');
export const distDir = path.join(repoRoot, 'dist');
export const cliPath = path.join(distDir, 'src', 'cli', 'main.js');

/** The chromium binary ($MOE_CHROMIUM, else Debian's), or null when none is installed. */
export function chromiumPath(): string | null {
  for (const p of [process.env.MOE_CHROMIUM, '/usr/bin/chromium', '/usr/bin/chromium-browser']) if (p && existsSync(p)) return p;
  return null;
}

export interface Server {
  url: string;
  close(): Promise<void>;
}

/** Serves dist/ (the playground is at playground/, the unbundled library at src/); isolated = COOP/COEP headers. */
export async function serveDist(isolated: boolean): Promise<Server> {
  const mod = (await import(pathToFileURL(path.join(repoRoot, 'scripts', 'serve-static.mjs')).href)) as {
    serveStatic(root: string, o: { port?: number; isolated?: boolean }): Promise<Server>;
  };
  if (!existsSync(path.join(distDir, 'playground', 'engine.js'))) throw new Error('dist/playground is missing: run "npm run build" (or "npm run build:browser")');
  return mod.serveStatic(distDir, { port: 0, isolated });
}

/** Launch arguments: no sandbox (containers run as root), quiet GPU-less headless. */
export const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'];
