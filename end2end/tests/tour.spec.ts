// The tour: every page a user can open — the dashboard, the job lists, a
// job page while it runs and once it finished, a target and its jobs, the
// launch form, the console and a recording, the account page and every
// admin page — loads, hydrates, logs no console error (the fixture fails
// the test on one) and makes no request that fails or answers an error.
import { test, expect, gotoHydrated } from './fixtures/test';
import { signIn } from './fixtures/users';
import { launchJob, waitFinished } from './fixtures/jobs';

test('a tour of every page as an admin: no console error, no failed request', async ({ page }) => {
  test.setTimeout(180_000);
  const failed: string[] = [];
  page.on('response', (r) => {
    if (r.status() >= 400) failed.push(`${r.status()} ${r.request().method()} ${new URL(r.url()).pathname}`);
  });
  page.on('requestfailed', (r) => {
    // Leaving a page ends its live streams and pending fetches: Chromium
    // reports those as aborted, which is no failure of the server.
    if (r.failure()?.errorText === 'net::ERR_ABORTED') return;
    failed.push(`${r.failure()?.errorText} ${new URL(r.url()).pathname}`);
  });
  await signIn(page, 'admin');
  await gotoHydrated(page, '/');
  const running = await launchJob(page, 'sleep', 'web-2', { seconds: 120 });
  const finished = await launchJob(page, 'sleep', 'db-1', { seconds: 0 });
  await waitFinished(page.request, finished);

  const pages: [string, RegExp | string][] = [
    ['/', 'Dashboard'],
    ['/jobs', /Jobs/],
    ['/admin/jobs', 'All jobs'],
    [`/jobs/${running}`, /Sleep/],
    [`/jobs/${finished}`, /Sleep/],
    ['/targets/web-1', /Web server 1/],
    ['/targets/web-1/jobs', /Web server 1/],
    ['/launch/sleep', /Sleep/],
    ['/account', 'Your account'],
    ['/admin/users', 'Users'],
    ['/admin/audit', 'Audit log'],
    ['/admin/agents', 'Agents'],
    ['/admin/webhooks', /Webhooks/],
    ['/admin/schedules', 'Schedules'],
  ];
  for (const [path, heading] of pages) {
    await test.step(path, async () => {
      await gotoHydrated(page, path);
      await expect(page.getByRole('heading', { level: 1 }).first()).toContainText(heading);
    });
  }
  await test.step('the running job streams on its page', async () => {
    await gotoHydrated(page, `/jobs/${running}`);
    await expect(page.locator('.job-title [data-state]')).toHaveAttribute('data-state', 'running');
  });

  await test.step('the console, then its recording', async () => {
    await gotoHydrated(page, '/targets/web-1/console');
    await expect(page.locator('[data-status="connected"]')).toBeVisible({ timeout: 15_000 });
    await page.locator('.terminal-box').click();
    await page.keyboard.type('echo tour-$((6*7))');
    await page.keyboard.press('Enter');
    await expect(page.locator('.xterm-rows')).toContainText('tour-42', { timeout: 10_000 });
    await page.keyboard.type('exit');
    await page.keyboard.press('Enter');
    await expect(page.locator('[data-status="ended"]')).toBeVisible({ timeout: 10_000 });
    await gotoHydrated(page, '/admin/audit?action=terminal.end');
    const row = page.locator('tr', { hasText: 'web-1' }).first();
    await row.getByRole('link', { name: 'Replay' }).click();
    await expect(page).toHaveURL(/\/admin\/recordings\/[0-9a-f]{32}$/);
    await expect(page.locator('.xterm-rows')).toBeVisible({ timeout: 15_000 });
  });

  const res = await page.request.post(`/api/jobs/${running}/cancel`, {
    headers: { origin: new URL(test.info().project.use.baseURL!).origin },
  });
  expect(res.status(), await res.text()).toBe(200);
  expect(failed, 'failed requests during the tour').toEqual([]);
});
