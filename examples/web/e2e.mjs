#!/usr/bin/env node
// Drive the page in headless Chromium (Debian's /usr/bin/chromium via playwright-core) and report, as
// one JSON object on stdout, what the page computed. Used by mnistkit's tests; handy by hand too.
//
//   node e2e.mjs '{"url": "http://127.0.0.1:8000/", "raw": "images.bin", "drawings": [...], "screenshot": "page.png"}'
//
// raw: a file of N images of uint8 pixels at the model's shape (N*784 for 1x28x28, N*H*W*3 for colour) to
// classify through the page's onnxruntime-web session.
// drawings: [{"name": "7", "strokes": [[[x, y], ...], ...]}] in canvas pixels (280x280): each is drawn
// with the mouse on a cleared canvas, then the page's prediction and the pixels the model saw are read back.
import fs from 'node:fs';
import process from 'node:process';

import { chromium } from 'playwright-core';

const config = JSON.parse(process.argv[2] ?? '{}');
const executablePath = process.env.CHROMIUM ?? '/usr/bin/chromium';
const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
         '--disable-component-update', '--disable-quic', '--no-first-run', '--disable-sync'],
});
const result = { console: [] };
try {
  const page = await browser.newPage({ viewport: { width: 860, height: 520 } });
  page.on('console', (msg) => result.console.push(`${msg.type()}: ${msg.text()}`));
  page.on('pageerror', (err) => result.console.push(`pageerror: ${err.message}`));
  await page.goto(config.url, { waitUntil: 'load' });
  await page.waitForFunction(() => window.mnistkit !== undefined);
  await page.evaluate(() => window.mnistkit.ready);
  result.initial = await page.evaluate(() => window.mnistkit.prediction);
  result.geometry = await page.evaluate(() => window.mnistkit.geometry);
  result.seen = await page.locator('#seen').textContent();

  if (config.raw) {
    const bytes = Array.from(fs.readFileSync(config.raw));
    result.raw = await page.evaluate((values) => window.mnistkit.classifyPixels(values), bytes);
  }

  const box = await page.locator('#pad').boundingBox();
  const scale = box.width / 280;
  result.drawings = [];
  for (const drawing of config.drawings ?? []) {
    await page.evaluate(() => window.mnistkit.clear());
    for (const stroke of drawing.strokes) {
      const [x0, y0] = stroke[0];
      await page.mouse.move(box.x + x0 * scale, box.y + y0 * scale);
      await page.mouse.down();
      for (const [x, y] of stroke.slice(1)) {
        await page.mouse.move(box.x + x * scale, box.y + y * scale, { steps: 4 });
      }
      await page.mouse.up();
    }
    await page.evaluate(() => window.mnistkit.classify());
    result.drawings.push({
      name: drawing.name,
      label: await page.evaluate(() => window.mnistkit.label),
      shown: await page.evaluate(() => window.mnistkit.prediction),
      pixels: await page.evaluate(() => window.mnistkit.lastPixels),
      probabilities: await page.evaluate(() => window.mnistkit.lastResult),
    });
    if (config.screenshot && drawing.name === config.screenshotOf) {
      await page.screenshot({ path: config.screenshot });
    }
  }
  await page.locator('#clear').click();
  result.afterClear = await page.evaluate(() => window.mnistkit.prediction);
  await page.evaluate(() => window.mnistkit.classify());
  result.emptyCanvas = await page.evaluate(() => window.mnistkit.prediction);
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(result) + '\n');
