#!/usr/bin/env node
// Drive examples/web/bench.html in headless Chromium (Debian's /usr/bin/chromium via playwright-core) for
// `mnistkit bench --devices browser`: one page load per thread count (onnxruntime-web fixes its threads when
// the WebAssembly module starts), the page's results as one JSON object on stdout.
//
//   node bench-driver.mjs '{"url": "http://127.0.0.1:PORT/bench.html", "threads": [1, 2], "config": {...}}'
import process from 'node:process';

import { chromium } from 'playwright-core';

const spec = JSON.parse(process.argv[2] ?? '{}');
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
         '--disable-component-update', '--disable-quic', '--no-first-run', '--disable-sync'],
});
const out = { runs: [], console: [], browser: browser.version() };
try {
  for (const threads of spec.threads) {
    const page = await browser.newPage();
    page.on('console', (msg) => out.console.push(`${msg.type()}: ${msg.text()}`));
    page.on('pageerror', (err) => out.console.push(`pageerror: ${err.message}`));
    await page.goto(`${spec.url}?threads=${threads}`, { waitUntil: 'load' });
    await page.waitForFunction(() => window.mnistkitBench !== undefined, null, { timeout: 30000 });
    out.runs.push(await page.evaluate((config) => window.mnistkitBench.run(config), spec.config));
    await page.close();
  }
} catch (e) {
  out.error = String(e?.message ?? e).split('\n')[0].slice(0, 300);
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
