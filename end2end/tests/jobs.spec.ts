// Jobs in the browser: launching, the live job page, cancel, reconnects,
// following, big logs, field errors, and what operators may see.
import { test, expect, gotoHydrated } from './fixtures/test';
import { signIn } from './fixtures/users';
import { behindProxy } from './fixtures/proxy';
import { JobPage, launchJob, waitFinished, shoot } from './fixtures/jobs';

test('a demo job launched from its form runs live to the succeeded pill', async ({ page }) => {
  await signIn(page, 'alice');
  await gotoHydrated(page, '/launch/demo-backup?target=web-1');
  await shoot(page, 'launch-form');
  await page.getByLabel('seconds').fill('4');
  await page.getByRole('button', { name: 'Launch' }).click();
  await expect(page).toHaveURL(/\/jobs\/\d+$/);
  const job = new JobPage(page);
  await expect(job.pill()).toHaveText(/running|queued/);
  await expect(page.getByRole('progressbar')).toBeVisible({ timeout: 10_000 });
  await expect(job.lines().nth(3)).toBeVisible();
  await shoot(page, 'job-running');
  await expect(job.pill()).toHaveText('succeeded', { timeout: 30_000 });
  await expect(page.locator('.exit-code')).toHaveText('0');
  await expect(page.getByRole('button', { name: 'Rerun' })).toBeVisible();
  await shoot(page, 'job-succeeded');
});

test('a running job is cancelled after confirming', async ({ page }) => {
  await signIn(page, 'alice');
  const id = await launchJob(page, 'sleep', 'web-2', { seconds: 300 });
  await gotoHydrated(page, `/jobs/${id}`);
  const job = new JobPage(page);
  await expect(job.pill()).toHaveText('running', { timeout: 10_000 });
  page.once('dialog', (d) => d.accept());
  await page.getByRole('button', { name: 'Cancel job' }).click();
  await expect(job.pill()).toHaveText(/cancelling|cancelled/);
  await expect(job.pill()).toHaveText('cancelled', { timeout: 15_000 });
  await expect(page.locator('.log-line.system').filter({ hasText: 'cancel requested by alice' })).toBeVisible();
  await shoot(page, 'job-cancelled');
});

test('a failed job shows its error and last stderr lines', async ({ page }) => {
  await signIn(page, 'alice');
  const id = await launchJob(page, 'flaky', 'web-1', { exit_code: 2 });
  await waitFinished(page.request, id);
  await page.goto(`/jobs/${id}`);
  await expect(page.getByRole('heading', { name: 'Failed: exited with code 2' })).toBeVisible();
  await expect(page.locator('.stderr-tail')).toContainText('could not obtain lock');
  await shoot(page, 'job-failed');
});

test.describe('a connection that drops', () => {
  // The dropped connections and refused reconnects show up on the console.
  test.use({ allowedConsoleErrors: [/Failed to load resource|net::ERR/] });

  test('a cut event stream reconnects and the log ends complete with no line twice', async ({ page, baseURL }) => {
    await behindProxy(page, baseURL!, async (proxy, base) => {
      const res = await page.request.post(`${base}/api/jobs`, {
        data: { template: 'paced', target: 'web-1', params: { lines: 40 } },
        headers: { origin: base },
      });
      const id = (await res.json()).id;
      await page.goto(`${base}/jobs/${id}`);
      const job = new JobPage(page);
      await expect(page.locator('.log-viewport')).toBeVisible();
      await expect(job.lines().filter({ hasText: 'line 10' }).first()).toBeVisible({ timeout: 15_000 });
      const cut = proxy.cut(3000);
      await expect(page.getByText('Connection lost: reconnecting')).toBeVisible({ timeout: 5_000 });
      await shoot(page, 'job-reconnecting');
      await cut;
      await expect(job.pill()).toHaveText('succeeded', { timeout: 30_000 });
      await expect(page.getByText('Connection lost: reconnecting')).toHaveCount(0);
      const last = (await (await page.request.get(`${base}/api/jobs/${id}`)).json()).last_seq;
      expect(last).toBe(42);
      const seqs = await job.seqs();
      expect(seqs).toEqual(Array.from({ length: last }, (_, i) => i + 1));
    });
  });

  test('a job list whose feed was cut shows the jobs that changed meanwhile once it reconnects', async ({ page, baseURL }) => {
    await behindProxy(page, baseURL!, async (proxy, base) => {
      await gotoHydrated(page, `${base}/jobs`);
      const table = page.locator('.table-wrap');
      await expect(table).toHaveAttribute('data-feed', 'live');
      const cut = proxy.cut(4000);
      await expect(table).toHaveAttribute('data-feed', 'reconnecting');
      // Launched and finished past the proxy, while this page hears nothing.
      const id = await launchJob(page, 'sleep', 'web-2', { seconds: 1 });
      await waitFinished(page.request, id);
      await cut;
      await expect(table).toHaveAttribute('data-feed', 'live', { timeout: 20_000 });
      const row = page.locator(`tr[data-job="${id}"]`);
      await expect(row.locator('[data-state]')).toHaveText('succeeded');
    });
  });

  test('a job list keeps its rows when its catch-up reload fails, and tries again', async ({ page, baseURL }) => {
    await behindProxy(page, baseURL!, async (proxy, base) => {
      await gotoHydrated(page, `${base}/jobs`);
      const table = page.locator('.table-wrap');
      await expect(table).toHaveAttribute('data-feed', 'live');
      // Every reload of the list fails until the route is taken away.
      let refused = 0;
      await page.route('**/api/list_jobs*', (route) => {
        refused += 1;
        return route.abort();
      });
      await proxy.down();
      await expect(table).toHaveAttribute('data-feed', 'reconnecting');
      const id = await launchJob(page, 'sleep', 'web-1', { seconds: 1 });
      await waitFinished(page.request, id);
      await proxy.up();
      await expect(table).toHaveAttribute('data-feed', 'live', { timeout: 20_000 });
      await expect.poll(() => refused, { message: 'the reload was tried' }).toBeGreaterThan(0);
      // The failed reload left the table as it was, without the new job.
      await expect(table).toHaveCount(1);
      const row = page.locator(`tr[data-job="${id}"]`);
      await expect(row).toHaveCount(0);
      await page.unroute('**/api/list_jobs*');
      await expect(row.locator('[data-state]')).toHaveText('succeeded', { timeout: 15_000 });
    });
  });
});

test('scrolling up stops following and the Follow pill resumes it', async ({ page }) => {
  await signIn(page, 'alice');
  const id = await launchJob(page, 'paced', 'web-2', { lines: 400 });
  await page.goto(`/jobs/${id}`);
  const job = new JobPage(page);
  await expect(job.lines().filter({ hasText: 'line 60' }).first()).toBeVisible({ timeout: 20_000 });
  expect(await job.atBottom()).toBe(true);
  await job.viewport().evaluate((el) => {
    el.scrollTop = 0;
    el.dispatchEvent(new Event('scroll'));
  });
  const follow = page.getByRole('button', { name: /Follow/ });
  await expect(follow).toBeVisible();
  await page.waitForTimeout(1000);
  expect(await job.scrollTop()).toBeLessThan(5);
  await shoot(page, 'job-not-following');
  await follow.click();
  await expect(follow).toHaveCount(0);
  await page.waitForTimeout(500);
  expect(await job.atBottom()).toBe(true);
  await page.request.post(`/api/jobs/${id}/cancel`, { headers: { origin: new URL(page.url()).origin } });
});

test('a million-line log is interactive within 2 s with a small DOM', async ({ page }) => {
  await signIn(page, 'alice');
  const id = await launchJob(page, 'million', 'web-1');
  const done = await waitFinished(page.request, id, 120_000);
  expect(done.last_seq).toBe(1_000_002);
  const t0 = Date.now();
  await page.goto(`/jobs/${id}`);
  const job = new JobPage(page);
  await expect(job.viewport()).toBeVisible();
  await page.getByPlaceholder('Find in log').fill('999999');
  const elapsed = Date.now() - t0;
  console.log(`the million-line page was interactive after ${elapsed} ms`);
  expect(elapsed, `interactive after ${elapsed} ms`).toBeLessThan(2000);
  const count = await page.locator('.log-line').count();
  expect(count).toBeGreaterThan(10);
  expect(count).toBeLessThan(3000);
  // The last lines show first; older ones are fetched as the view moves.
  await expect(job.lines().filter({ hasText: /^\s*1000000\s*1000000\s*$/ })).toHaveCount(0);
  await expect(page.locator('.log-line[data-seq="1000001"]')).toBeVisible();
  await expect.poll(() => job.rowInView(1_000_002), { message: 'the last line is in view' }).toBe(true);
  await job.viewport().evaluate((el) => {
    el.scrollTop = 0;
    el.dispatchEvent(new Event('scroll'));
  });
  await expect(page.locator('.log-line[data-seq="2"] .lt')).toHaveText('1', { timeout: 10_000 });
  expect(await page.locator('.log-line').count()).toBeLessThan(3000);
  // Find asks the server and jumps there.
  await page.getByRole('button', { name: 'Find' }).click();
  await expect(page.locator('.log-line.hl')).toContainText('999999');
  await expect.poll(() => job.rowInView(1_000_000), { message: 'the match is in view' }).toBe(true);
  await shoot(page, 'job-million');
});

test('a bad parameter shows its error beside the field', async ({ page }) => {
  await signIn(page, 'alice');
  await gotoHydrated(page, '/launch/sleep?target=web-1');
  await page.getByLabel('seconds').fill('99999999');
  await page.getByRole('button', { name: 'Launch' }).click();
  await expect(page.locator('#param-seconds-error')).toHaveText('seconds must be at most 86400');
  await expect(page).toHaveURL(/\/launch\/sleep/);
  await shoot(page, 'launch-field-error');
});

test.describe('another operator', () => {
  test.use({ allowedConsoleErrors: [/status of 404/] });

  test('cannot see a job that is not theirs', async ({ page, browser }) => {
    const bobPage = await browser.newPage();
    await signIn(bobPage, 'bob');
    await bobPage.goto('/');
    const id = await launchJob(bobPage, 'sleep', 'db-1', { seconds: 1 });
    await bobPage.close();
    await signIn(page, 'alice');
    const res = await page.goto(`/jobs/${id}`);
    expect(res?.status()).toBe(404);
    await expect(page.getByRole('heading', { name: 'Job not found' })).toBeVisible();
    await page.goto('/jobs');
    await expect(page.locator(`tr[data-job="${id}"]`)).toHaveCount(0);
  });
});

test('job lists update live and filter by state', async ({ page }) => {
  await signIn(page, 'alice');
  await gotoHydrated(page, '/jobs');
  await expect(page.locator('.table-wrap[data-feed="live"]')).toBeVisible();
  const id = await launchJob(page, 'sleep', 'web-2', { seconds: 1 });
  const row = page.locator(`tr[data-job="${id}"]`);
  await expect(row).toBeVisible({ timeout: 10_000 });
  await expect(row.locator('[data-state]')).toHaveText('succeeded', { timeout: 20_000 });
  await page.goto('/jobs?state=failed');
  await expect(page.locator(`tr[data-job="${id}"]`)).toHaveCount(0);
  await shoot(page, 'jobs-failed');
});

test('every page, for the record', async ({ page }) => {
  await signIn(page, 'admin');
  const running = await launchJob(page, 'paced', 'web-1', { lines: 200 });
  for (const [name, path] of [
    ['dashboard', '/'],
    ['jobs', '/jobs'],
    ['job', `/jobs/${running}`],
    ['target', '/targets/web-1'],
    ['target-jobs', '/targets/web-1/jobs'],
    ['admin-jobs', '/admin/jobs'],
    ['admin-users', '/admin/users'],
    ['admin-audit', '/admin/audit'],
    ['account', '/account'],
  ]) {
    await page.goto(path);
    await page.waitForTimeout(700);
    await shoot(page, `page-${name}`);
  }
  await page.setViewportSize({ width: 390, height: 844 });
  for (const [name, path] of [
    ['dashboard', '/'],
    ['job', `/jobs/${running}`],
  ]) {
    await page.goto(path);
    await page.waitForTimeout(700);
    await shoot(page, `phone-${name}`);
  }
  await page.request.post(`/api/jobs/${running}/cancel`, { headers: { origin: new URL(page.url()).origin } });
});
