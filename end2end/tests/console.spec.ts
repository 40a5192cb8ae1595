// The browser terminal: xterm.js in Chromium over the terminal WebSocket.
import { test, expect, gotoHydrated } from './fixtures/test';
import { signIn } from './fixtures/users';
import { shoot } from './fixtures/jobs';

test('typing into the console runs the command in a real shell', async ({ page }) => {
  await signIn(page, 'alice');
  await page.goto('/targets/web-1/console');
  const rows = page.locator('.xterm-rows');
  await expect(page.locator('[data-status="connected"]')).toBeVisible({ timeout: 15_000 });
  await expect(rows).toBeVisible();
  await page.locator('.terminal-box').click();
  await page.keyboard.type('echo hi-$((6*7))');
  await page.keyboard.press('Enter');
  await expect(rows).toContainText('hi-42', { timeout: 10_000 });
  await shoot(page, 'console');

  // A reload reattaches to the same shell: a variable set before survives.
  await page.keyboard.type('MARK=kept-$((40+2))');
  await page.keyboard.press('Enter');
  await page.reload();
  await expect(page.locator('[data-status="connected"]')).toContainText('Reconnected', {
    timeout: 15_000,
  });
  await page.locator('.terminal-box').click();
  await page.keyboard.type('echo $MARK');
  await page.keyboard.press('Enter');
  await expect(rows).toContainText('kept-42', { timeout: 10_000 });

  await page.keyboard.type('exit 3');
  await page.keyboard.press('Enter');
  await expect(page.locator('[data-status="ended"]')).toContainText('exited with code 3', {
    timeout: 10_000,
  });
});

test('only the console page downloads xterm.js', async ({ page }) => {
  await signIn(page, 'alice');
  const fetched: string[] = [];
  page.on('request', (r) => fetched.push(new URL(r.url()).pathname));
  await gotoHydrated(page, '/targets/web-1');
  await expect(page.getByRole('link', { name: 'Console' })).toBeVisible();
  // Hydrated, and its live data flowing: every module the page imports has
  // loaded. (Not 'networkidle': the live connection never ends.)
  await expect(page.locator('[data-feed="live"]').first()).toBeVisible({ timeout: 15_000 });
  expect(fetched.filter((p) => p.startsWith('/vendor/xterm/'))).toEqual([]);
  await page.getByRole('link', { name: 'Console' }).click();
  await expect(page.locator('.xterm-rows')).toBeVisible({ timeout: 15_000 });
  expect(fetched).toContain('/vendor/xterm/xterm.mjs');
  await page.keyboard.type('exit');
  await page.keyboard.press('Enter');
});

test.describe('a target without a terminal for the caller', () => {
  // The page's own 403 status is reported by Chromium.
  test.use({ allowedConsoleErrors: [/status of 403/] });

  test('shows a 403 page that says what to ask for', async ({ page }) => {
    await signIn(page, 'bob');
    const res = await page.goto('/targets/db-1/console');
    expect(res?.status()).toBe(403);
    await expect(page.getByRole('heading', { name: /No console/ })).toBeVisible();
    await expect(page.getByText('terminal = true')).toBeVisible();
  });
});

test('an admin replays a recorded session from the audit log', async ({ page }) => {
  await signIn(page, 'admin');
  await page.goto('/admin/audit?action=terminal.end');
  const row = page.locator('tr', { hasText: '"code":3' }).first();
  await row.getByRole('link', { name: 'Replay' }).click();
  await expect(page).toHaveURL(/\/admin\/recordings\/[0-9a-f]{32}$/);
  await expect(page.locator('.xterm-rows')).toBeVisible({ timeout: 15_000 });
  await expect(async () => {
    await page.getByLabel('Speed').selectOption('0');
    await page.getByRole('button', { name: 'Play from the start' }).click();
    await expect(page.locator('.xterm-rows')).toContainText('hi-42', { timeout: 2000 });
  }).toPass({ timeout: 20_000 });
  await shoot(page, 'recording');
});
