// Browser hardening: every page works under opsdeck's Content-Security-Policy
// with no violation (the `cspViolations` fixture fails a test on any), and
// markup in a template title or in job output never runs.
import { test, expect, gotoHydrated } from './fixtures/test';
import { signIn } from './fixtures/users';
import { launchJob, waitFinished } from './fixtures/jobs';
import type { Page, Response } from '@playwright/test';

/** The response's policy, checked for what every page must say; its nonce. */
function policyOf(res: Response | null): string {
  expect(res, 'a response').not.toBeNull();
  const csp = res!.headers()['content-security-policy'] ?? '';
  expect(csp).toContain("frame-ancestors 'none'");
  expect(csp).toMatch(/script-src 'self' 'nonce-[0-9a-f]{32}' 'wasm-unsafe-eval';/);
  expect(csp).not.toContain("'unsafe-eval'");
  expect(res!.headers()['x-content-type-options']).toBe('nosniff');
  expect(res!.headers()['referrer-policy']).toBe('same-origin');
  return csp;
}

/** Opens `path`, checks its policy, waits for hydration. */
async function visit(page: Page, path: string) {
  const res = await page.goto(path);
  policyOf(res);
  await expect(page.locator('html')).toHaveAttribute('data-hydrated', '', { timeout: 30_000 });
}

test('every page hydrates under the policy with no violation', async ({ page }) => {
  await visit(page, '/login');
  await signIn(page, 'admin');
  const job = await launchJob(page, 'paced', 'web-1', { lines: 20 });
  for (const path of [
    '/',
    '/jobs',
    `/jobs/${job}`,
    '/launch/demo-backup',
    '/targets/web-1',
    '/targets/web-1/jobs',
    '/admin/jobs',
    '/admin/users',
    '/admin/audit',
    '/account',
  ]) {
    await visit(page, path);
  }
  // The job page streams over an EventSource (connect-src) and colours
  // ANSI output.
  await page.goto(`/jobs/${job}`);
  await expect(page.locator('.log-line[data-seq="20"]')).toBeVisible({ timeout: 20_000 });
  await expect(page.locator('.log-line .ansi-fg2').first()).toBeVisible();
});

test('the console and the replay page work under the policy', async ({ page, browser }) => {
  await signIn(page, 'alice');
  const res = await page.goto('/targets/web-1/console');
  policyOf(res);
  // xterm.js loads (script-src 'self'), styles itself (nonced <style>
  // elements), and talks over the WebSocket (connect-src 'self').
  await expect(page.locator('[data-status="connected"]')).toBeVisible({ timeout: 15_000 });
  await page.locator('.terminal-box').click();
  await page.keyboard.type('echo csp-$((6*7))');
  await page.keyboard.press('Enter');
  const rows = page.locator('.xterm-rows');
  await expect(rows).toContainText('csp-42', { timeout: 10_000 });
  await page.keyboard.type('exit 7');
  await page.keyboard.press('Enter');
  await expect(page.locator('[data-status="ended"]')).toContainText('exited with code 7', { timeout: 10_000 });

  const admin = await browser.newPage();
  try {
    await signIn(admin, 'admin');
    await admin.goto('/admin/audit?action=terminal.end');
    await admin.locator('tr', { hasText: '"code":7' }).first().getByRole('link', { name: 'Replay' }).click();
    await expect(admin).toHaveURL(/\/admin\/recordings\/[0-9a-f]{32}$/);
    policyOf(await admin.reload());
    await expect(admin.locator('.xterm-rows')).toBeVisible({ timeout: 15_000 });
    await expect(async () => {
      await admin.getByLabel('Speed').selectOption('0');
      await admin.getByRole('button', { name: 'Play from the start' }).click();
      await expect(admin.locator('.xterm-rows')).toContainText('csp-42', { timeout: 2000 });
    }).toPass({ timeout: 20_000 });
  } finally {
    await admin.close();
  }
});

test('markup in a template title or in job output shows as text and never runs', async ({ page }) => {
  const xssRequests: string[] = [];
  page.on('request', (r) => {
    if (new URL(r.url()).pathname.startsWith('/xss')) xssRequests.push(r.url());
  });
  const ran = () => page.evaluate(() => (window as unknown as { __xss?: string }).__xss ?? null);

  await signIn(page, 'alice');
  await gotoHydrated(page, '/targets/web-2');
  await gotoHydrated(page, '/launch/xss');
  await expect(page.getByRole('heading', { name: /Markup <script>/ })).toBeVisible();
  await expect(page.getByText(`Prints markup: <svg onload="window.__xss='svg'"></svg>`).first()).toBeVisible();
  await expect(page).toHaveTitle(/Markup <script>/);

  // Live: the lines arrive over the event stream and are rendered by the wasm.
  const id = await launchJob(page, 'xss', 'web-2');
  await gotoHydrated(page, `/jobs/${id}`);
  await expect(page.getByText(`<script>window.__xss='log';fetch('/xss-log')</script>`).first()).toBeVisible({
    timeout: 15_000,
  });
  await waitFinished(page.request, id);
  // Rendered on the server: the stored lines in the page's HTML.
  await gotoHydrated(page, `/jobs/${id}`);
  await expect(page.getByText(`<img src=/xss-log-img onerror="window.__xss='log-img'">`).first()).toBeVisible();
  const red = page.locator('.log-line .ansi-fg1', { hasText: `<b onmouseover="window.__xss='ansi'">red</b>` });
  await expect(red.first()).toBeVisible();
  await red.first().hover();
  await gotoHydrated(page, '/jobs');

  // The downloaded log is plain text the browser may not sniff into a page.
  const raw = await page.request.get(`/api/jobs/${id}/log?format=text`);
  expect(raw.headers()['content-type']).toMatch(/^text\/plain/);
  expect(raw.headers()['x-content-type-options']).toBe('nosniff');

  await page.waitForTimeout(500);
  expect(await ran()).toBeNull();
  expect(xssRequests).toEqual([]);
});

test.describe('an inline script that got into a page anyway', () => {
  // Chromium also logs each blocked script as a console error.
  test.use({ allowedConsoleErrors: [/Content Security Policy/] });

  test('is blocked by the policy and reported', async ({ page, cspViolations }) => {
    await signIn(page, 'alice');
    await gotoHydrated(page, '/');
    await page.evaluate(() => {
      // As if escaping had failed somewhere: an inline handler, and a
      // script element without the nonce.
      document.body.insertAdjacentHTML('beforeend', `<img src="/favicon.svg" onload="window.__xss='attr'">`);
      const s = document.createElement('script');
      s.textContent = "window.__xss = 'element'";
      document.body.append(s);
    });
    await expect.poll(() => cspViolations.length, { timeout: 5_000 }).toBe(2);
    expect(cspViolations.join('\n')).toContain('script-src-attr');
    expect(cspViolations.join('\n')).toContain('script-src-elem');
    expect(await page.evaluate(() => (window as unknown as { __xss?: string }).__xss ?? null)).toBeNull();
    // Seen, and expected: nothing else may be left for the fixture.
    cspViolations.length = 0;
  });
});

test('signing out in another tab stops the live pages and the console, and each says why', async ({ page, context, baseURL }) => {
  await signIn(page, 'alice');
  await gotoHydrated(page, '/');
  const table = page.locator('.table-wrap').first();
  await expect(table).toHaveAttribute('data-feed', 'live', { timeout: 15_000 });
  const consolePage = await context.newPage();
  await consolePage.goto('/targets/web-1/console');
  await expect(consolePage.locator('[data-status="connected"]')).toBeVisible({ timeout: 15_000 });

  // Another tab of the same browser signs out (the same session).
  const res = await context.request.post('/api/auth/logout', { headers: { origin: baseURL! } });
  expect(res.status()).toBe(204);

  await expect(table).toHaveAttribute('data-feed', 'signed-out', { timeout: 5_000 });
  await expect(page.getByRole('alert')).toContainText('Live updates stopped: signed out');
  await expect(page.getByRole('link', { name: 'Sign in again' })).toBeVisible();
  await expect(consolePage.locator('[data-status="ended"]')).toContainText('Session closed: signed out', {
    timeout: 5_000,
  });
  await consolePage.close();
});
