import { defineConfig } from '@playwright/test';

// Run by `cargo leptos end-to-end --release` (see the Makefile), which starts
// opsdeck with end2end/opsdeck.e2e.toml and then runs `npx playwright test`.
export default defineConfig({
  testDir: './tests',
  workers: 1,
  fullyParallel: false,
  reporter: [['list']],
  timeout: 60_000,
  expect: { timeout: 10_000 },
  globalSetup: './tests/fixtures/global-setup.ts',
  outputDir: './test-results',
  use: {
    baseURL: process.env.OPSDECK_BASE_URL ?? 'http://127.0.0.1:3210',
    trace: 'retain-on-failure',
    screenshot: 'only-on-failure',
    launchOptions: {
      // Debian's Chromium; Playwright never downloads a browser here.
      executablePath: '/usr/bin/chromium',
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    },
  },
  projects: [{ name: 'chromium', use: { browserName: 'chromium' } }],
});
