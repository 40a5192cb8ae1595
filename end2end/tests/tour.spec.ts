// A tour of every page as an admin: the dashboard, the lists, a running and
// a finished job, a target, its history and console, the launch form, the
// admin pages (a session recording too) and the account. Besides the
// console errors every test fails on (fixtures/test.ts), it fails on any
// request that fails or answers 400 or more.
import { test, expect, gotoHydrated } from './fixtures/test';
import { signIn } from './fixtures/users';
import { launchJob, waitFinished } from './fixtures/jobs';

test('a tour of every page logs no console error and no failed request', async ({ page }) => {
  test.setTimeout(120_000);
  const failed: string[] = [];
  page.on('requestfailed', (r) => {
    // Leaving a page aborts what it still has open: its event streams, a
    // list's catch-up reload. Anything else that fails counts.
    if (r.failure()?.errorText === 'net::ERR_ABORTED') return;
    failed.push(`${r.method()} ${new URL(r.url()).pathname}: ${r.failure()?.errorText}`);
  });
  page.on('response', (r) => {
    if (r.status() >= 400) failed.push(`${r.request().method()} ${new URL(r.url()).pathname}: HTTP ${r.status()}`);
  });
  await signIn(page, 'admin');
  const running = await launchJob(page, 'paced', 'web-2', { lines: 600 });
  const finished = await launchJob(page, 'flaky', 'web-1', { exit_code: 2 });
  await waitFinished(page.request, finished);

  // Each page, and what shows it has loaded and gone live.
  const live = '.table-wrap[data-feed="live"]';
  const tour: [string, string][] = [
    ['/', live],
    ['/jobs', live],
    [`/jobs/${running}`, '.log-line[data-seq]'],
    [`/jobs/${finished}`, '.failure-panel'],
    ['/targets/web-1', '.job-bars'],
    ['/targets/web-1/jobs', live],
    ['/targets/web-1/console', '[data-status="connected"]'],
    ['/launch/demo-backup?target=web-1', 'form'],
    ['/admin/jobs', live],
    ['/admin/users', 'table'],
    ['/admin/agents', 'h1'],
    ['/admin/audit', 'table'],
    ['/account', 'h1'],
  ];
  for (const [path, ready] of tour) {
    await gotoHydrated(page, path);
    await expect(page.locator(ready).first(), `${path} shows ${ready}`).toBeVisible({ timeout: 15_000 });
    if (path.endsWith('/console')) {
      // Ended, the session is recorded for the replay below.
      await page.locator('.terminal-box').click();
      await page.keyboard.type('exit');
      await page.keyboard.press('Enter');
      await expect(page.locator('[data-status="ended"]')).toBeVisible({ timeout: 10_000 });
    }
  }
  // The console session just ended left a recording to replay.
  await gotoHydrated(page, '/admin/audit');
  const replay = page.locator('a.replay').first();
  await expect(replay).toBeVisible();
  await replay.click();
  await expect(page).toHaveURL(/\/admin\/recordings\/\d+/);
  await expect(page.locator('h1')).toBeVisible();

  await page.request.post(`/api/jobs/${running}/cancel`, { headers: { origin: new URL(page.url()).origin } });
  expect(failed, 'failed requests on the tour').toEqual([]);
});

test.describe('a reader in another time zone', () => {
  test.use({ timezoneId: 'Asia/Kolkata' });

  test('sees times in their zone with UTC on hover, and how long ago in lists', async ({ page }) => {
    await signIn(page, 'alice');
    const id = await launchJob(page, 'sleep', 'web-2', { seconds: 0 });
    await waitFinished(page.request, id);
    await gotoHydrated(page, `/jobs/${id}`);
    const created = page.locator('.job-facts time').first();
    const iso = (await created.getAttribute('datetime'))!;
    const at = Date.parse(iso);
    const fmt = (ms: number) => new Date(ms).toISOString().slice(0, 19).replace('T', ' ');
    await expect(created).toHaveText(`${fmt(at + 5.5 * 3600_000)} UTC+05:30`);
    await expect(created).toHaveAttribute('title', `${fmt(at)} UTC`);

    await gotoHydrated(page, '/jobs');
    const listed = page.locator(`tr[data-job="${id}"] time`);
    await expect(listed).toHaveText(/^(just now|\d+ s ago|\d+ min ago)$/);
    await expect(listed).toHaveAttribute('title', `${fmt(at + 5.5 * 3600_000)} UTC+05:30 (${fmt(at)} UTC)`);
  });
});
