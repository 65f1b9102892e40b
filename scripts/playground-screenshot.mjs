/* global window -- the page functions below run in the browser */
// Renders docs/playground.png: the playground in headless chromium after a short training run,
// with the routing view and a generation. `node scripts/playground-screenshot.mjs [--steps N]`
// after `npm run build`.
import { chromium } from 'playwright-core';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { serveStatic } from './serve-static.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const i = process.argv.indexOf('--steps');
const steps = i >= 0 ? process.argv[i + 1] : '150';
const exe = [process.env.MOE_CHROMIUM, '/usr/bin/chromium'].find((p) => p && existsSync(p));
if (!exe) {
  console.error('playground-screenshot: chromium not found (set MOE_CHROMIUM)');
  process.exit(1);
}
const server = await serveStatic(join(root, 'dist'), { isolated: true });
const browser = await chromium.launch({ executablePath: exe, args: ['--no-sandbox', '--disable-gpu'] });
try {
  const page = await browser.newPage({ viewport: { width: 1440, height: 1000 }, deviceScaleFactor: 1 });
  await page.goto(server.url + 'playground/');
  await page.waitForFunction(() => window.playground?.ready === true);
  await page.fill('input[name=steps]', steps);
  await page.click('#train-btn');
  await page.waitForFunction(() => window.playground.trained !== null, undefined, { timeout: 600_000 });
  await page.click('#route-btn');
  await page.waitForSelector('#routing .layer');
  await page.fill('#gen-tokens', '160');
  await page.click('#gen-btn');
  await page.waitForFunction(() => window.playground.lastGeneration !== null, undefined, { timeout: 120_000 });
  // hover one token so the probability tooltip shows
  const tok = page.locator('#routing .layer').first().locator('.tok').nth(3);
  const box = await tok.boundingBox();
  if (box) await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
  await page.waitForTimeout(300);
  const out = join(root, 'docs', 'playground.png');
  await page.screenshot({ path: out, fullPage: true });
  console.log(`playground-screenshot: wrote ${out}`);
} finally {
  await browser.close();
  await server.close();
}
