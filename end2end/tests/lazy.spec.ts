// The light first load (issue 16): the dashboard loads the main wasm only;
// every other page's code is a wasm part of its own (app/src/routes.rs,
// cargo-leptos' --split build), fetched when that page is opened, and
// xterm.js only with the console. The parts are named after their route
// (`ConsoleRoute` → `/pkg/split___console_route_view_….wasm`); the parts
// several pages share are `/pkg/chunk_N.….wasm`.
import { test, expect, gotoHydrated } from './fixtures/test';
import { signIn } from './fixtures/users';
import type { Page } from '@playwright/test';

/** Every path the page requests from now on. */
function requests(page: Page): string[] {
  const fetched: string[] = [];
  page.on('request', (r) => fetched.push(new URL(r.url()).pathname));
  return fetched;
}

const lazyParts = (fetched: string[]) => fetched.filter((p) => /^\/pkg\/(split_|chunk_)/.test(p));
const part = (fetched: string[], route: string) =>
  fetched.filter((p) => p.startsWith(`/pkg/split___${route}_route_view_`));

test('the dashboard fetches no lazy part and no xterm.js; the console fetches both', async ({ page }) => {
  await signIn(page, 'alice');
  const fetched = requests(page);
  await gotoHydrated(page, '/');
  // Hydrated, and its live data flowing: whatever the dashboard loads has
  // loaded. (Not 'networkidle': the live connection never ends.)
  await expect(page.locator('[data-feed="live"]').first()).toBeVisible({ timeout: 15_000 });
  expect(fetched.filter((p) => p.startsWith('/pkg/')).length).toBeGreaterThan(0);
  expect(lazyParts(fetched)).toEqual([]);
  expect(fetched.filter((p) => p.startsWith('/vendor/xterm/'))).toEqual([]);

  // A link the router follows: the target page's part, still no xterm.js.
  await page.getByRole('link', { name: 'Web server 1' }).click();
  await expect(page).toHaveURL(/\/targets\/web-1$/);
  // N.B.: exact: the dashboard's cards say "Open console".
  await expect(page.getByRole('link', { name: 'Console', exact: true })).toBeVisible();
  expect(part(fetched, 'target')).toHaveLength(1);
  expect(part(fetched, 'console')).toEqual([]);
  expect(fetched.filter((p) => p.startsWith('/vendor/xterm/'))).toEqual([]);

  await page.getByRole('link', { name: 'Console', exact: true }).click();
  await expect(page.locator('.xterm-rows')).toBeVisible({ timeout: 15_000 });
  expect(part(fetched, 'console')).toHaveLength(1);
  expect(fetched).toContain('/vendor/xterm/xterm.mjs');
  await page.locator('.terminal-box').click();
  await page.keyboard.type('exit');
  await page.keyboard.press('Enter');
  await expect(page.locator('[data-status="ended"]')).toBeVisible({ timeout: 10_000 });
});

test("an admin's dashboard fetches no admin page; each admin page fetches its own part", async ({ page }) => {
  await signIn(page, 'admin');
  const fetched = requests(page);
  await gotoHydrated(page, '/');
  // Hydrated, and its live data flowing: whatever the dashboard loads has
  // loaded. (Not 'networkidle': the live connection never ends.)
  await expect(page.locator('[data-feed="live"]').first()).toBeVisible({ timeout: 15_000 });
  await expect(page.getByRole('navigation', { name: 'Account' }).getByRole('link', { name: 'Users' })).toBeVisible();
  expect(lazyParts(fetched)).toEqual([]);

  await page.getByRole('navigation', { name: 'Account' }).getByRole('link', { name: 'Users' }).click();
  await expect(page.getByRole('heading', { name: 'Users', exact: true })).toBeVisible();
  expect(part(fetched, 'users')).toHaveLength(1);
  for (const other of ['agents', 'audit', 'webhooks', 'schedules', 'recording', 'admin_jobs', 'console']) {
    expect(part(fetched, other), `${other} not fetched`).toEqual([]);
  }

  await page.getByRole('navigation', { name: 'Account' }).getByRole('link', { name: 'Audit log' }).click();
  await expect(page.getByRole('heading', { name: 'Audit log', exact: true })).toBeVisible();
  expect(part(fetched, 'audit')).toHaveLength(1);
  // Every part fetched once, under its hashed (immutable) name.
  const parts = lazyParts(fetched);
  expect(new Set(parts).size).toBe(parts.length);
  for (const p of parts) expect(p).toMatch(/\.[0-9a-f]{16}\.wasm$/);
});
