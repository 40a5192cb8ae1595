// `bench/run.sh web`: what a first visit downloads and how long it takes
// until the page is interactive, in Chromium on a throttled connection.
//
//   node bench/web/firstload.cjs BASE_URL PASSWORD RUNS OUT.jsonl PAGES.json
//
// PAGES.json: [{"name", "path", "ready"?: CSS selector}]; the first is the
// page a visitor lands on (the dashboard). For each page, RUNS cold loads
// (a new browser context: empty cache, signed in as admin through the API),
// and one client-side navigation to it from the hydrated first page (what
// opening it from the app costs on top). The connection is throttled with
// the Chrome DevTools Protocol as Lighthouse's "Fast 3G": 1.6 Mbit/s down,
// 750 kbit/s up, 150 ms round trip.
//
// Bytes are what went over the wire per file (CDP `encodedDataLength`:
// compressed body and headers). "Hydrated" is the time from the start of
// the navigation until the wasm sets `<html data-hydrated>` (frontend/src/
// lib.rs), read by a MutationObserver in the page: no polling interval in
// the figure.
//
// Playwright comes from end2end/node_modules (NODE_PATH).
'use strict';
const fs = require('fs');
const { chromium } = require('@playwright/test');

const [base, password, runsArg, out, pagesFile] = process.argv.slice(2);
const RUNS = Number(runsArg || 3);
const PAGES = JSON.parse(fs.readFileSync(pagesFile, 'utf8'));
const THROTTLE = {
  offline: false,
  latency: 150,
  downloadThroughput: (1.6 * 1000 * 1000) / 8,
  uploadThroughput: (750 * 1000) / 8,
};
const IDLE_MS = 1000; // the network counts as settled after this long without a request in flight
const DEADLINE_MS = 120_000;

function emit(obj) {
  fs.appendFileSync(out, JSON.stringify(obj) + '\n');
}

// Records each request's URL and transferred bytes on one page.
async function recorder(context, page) {
  const cdp = await context.newCDPSession(page);
  await cdp.send('Network.enable');
  await cdp.send('Network.emulateNetworkConditions', THROTTLE);
  const urls = new Map();
  const done = [];
  let inFlight = 0;
  let lastChange = Date.now();
  cdp.on('Network.requestWillBeSent', (e) => {
    // A shared worker's own script (live.mjs, docs/live.md): the page
    // reports its request, the worker's target its end, so here it would
    // never settle. It is the module the page has just loaded, under its
    // immutable hashed name, and comes from the cache (the server sees one
    // request for it): nothing over the wire to count.
    if (!e.loaderId && e.documentURL === e.request.url) return;
    if (!urls.has(e.requestId)) inFlight++;
    urls.set(e.requestId, e.request.url);
    lastChange = Date.now();
  });
  const finish = (e, failed) => {
    if (!urls.has(e.requestId)) return;
    inFlight--;
    lastChange = Date.now();
    done.push({ url: urls.get(e.requestId), bytes: failed ? 0 : e.encodedDataLength, at: Date.now() });
    urls.delete(e.requestId);
  };
  cdp.on('Network.loadingFinished', (e) => finish(e, false));
  cdp.on('Network.loadingFailed', (e) => finish(e, true));
  return {
    // Resolves once nothing has been in flight for IDLE_MS. Long-lived
    // requests (the live event streams: the tab's `/api/live`, a job's
    // `/events`; the terminal socket) never finish
    // and are not counted as in flight: they go through EventSource and
    // WebSocket, which CDP reports with other events; their fetches are
    // reported only when they end.
    async settled() {
      const t0 = Date.now();
      for (;;) {
        const streams = [...urls.values()].filter((u) => /\/events(\?|$)|\/api\/events|\/api\/live(\?|$)/.test(u)).length;
        if (inFlight - streams <= 0 && Date.now() - lastChange >= IDLE_MS) return;
        if (Date.now() - t0 > DEADLINE_MS) throw new Error(`network not settled after ${DEADLINE_MS} ms`);
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    take() {
      return done.splice(0);
    },
  };
}

function byFile(entries) {
  const files = {};
  for (const { url, bytes } of entries) {
    const u = new URL(url);
    const name = u.pathname === '/' || !/\.[a-z0-9]+$/.test(u.pathname) ? `${u.pathname} (document/data)` : u.pathname;
    files[name] = (files[name] || 0) + bytes;
  }
  return files;
}

async function newContext(browser) {
  const context = await browser.newContext({ baseURL: base });
  const res = await context.request.post('/api/auth/login', { data: { username: 'admin', password } });
  if (res.status() !== 200) throw new Error(`sign-in failed: ${res.status()} ${await res.text()}`);
  await context.addInitScript(() => {
    const w = window;
    new MutationObserver(() => {
      if (w.__hydratedAt === undefined && document.documentElement?.hasAttribute('data-hydrated')) {
        w.__hydratedAt = performance.now();
      }
    }).observe(document, { attributes: true, subtree: true, attributeFilter: ['data-hydrated'] });
  });
  return context;
}

async function hydratedAt(page) {
  await page.waitForFunction(() => window.__hydratedAt !== undefined, null, { timeout: DEADLINE_MS, polling: 100 });
  return page.evaluate(() => window.__hydratedAt);
}

async function main() {
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    for (const p of PAGES) {
      for (let run = 1; run <= RUNS; run++) {
        const context = await newContext(browser);
        const page = await context.newPage();
        const rec = await recorder(context, page);
        const resp = await page.goto(p.path, { waitUntil: 'commit', timeout: DEADLINE_MS });
        if (!resp || resp.status() !== 200) throw new Error(`${p.path}: HTTP ${resp && resp.status()}`);
        const hydrated = await hydratedAt(page);
        if (p.ready) await page.locator(p.ready).first().waitFor({ timeout: DEADLINE_MS });
        await rec.settled();
        const files = byFile(rec.take());
        const total = Object.values(files).reduce((a, b) => a + b, 0);
        emit({ bench: 'web-first', page: p.name, path: p.path, run, hydrated_ms: hydrated, bytes: total, files });
        console.error(`web: ${p.name} cold load ${run}/${RUNS}: ${total} B, hydrated at ${Math.round(hydrated)} ms`);
        await context.close();
      }
    }
    // What opening each other page from the first one adds.
    const [first, ...rest] = PAGES;
    for (const p of rest) {
      const context = await newContext(browser);
      const page = await context.newPage();
      const rec = await recorder(context, page);
      await page.goto(first.path, { waitUntil: 'commit', timeout: DEADLINE_MS });
      await hydratedAt(page);
      await rec.settled();
      rec.take();
      const t0 = Date.now();
      // A click on a link the router intercepts, as a user's would be.
      await page.evaluate((path) => {
        const a = document.createElement('a');
        a.href = path;
        a.textContent = 'bench';
        document.body.append(a);
        a.click();
      }, p.path);
      await page.waitForURL((u) => u.pathname + u.search === p.path, { timeout: DEADLINE_MS });
      if (p.ready) await page.locator(p.ready).first().waitFor({ timeout: DEADLINE_MS });
      const shown_ms = Date.now() - t0;
      await rec.settled();
      const files = byFile(rec.take());
      const site = Object.fromEntries(Object.entries(files).filter(([k]) => !k.endsWith('(document/data)')));
      const bytes = Object.values(site).reduce((a, b) => a + b, 0);
      emit({ bench: 'web-lazy', page: p.name, path: p.path, from: first.path, shown_ms, bytes, files });
      console.error(`web: ${first.name} -> ${p.name}: ${bytes} B of site files, shown after ${shown_ms} ms`);
      await context.close();
    }
  } finally {
    await browser.close();
  }
}

main().catch((e) => {
  console.error(`web: ${e.stack || e}`);
  process.exit(1);
});
