// One live connection per browser (docs/live.md): every tab's feed and job
// streams are subscriptions of one `/api/live` connection, held by a shared
// worker, else by a leader tab elected with Web Locks, else (neither
// available) by each tab for itself. Every line arrives exactly once, also
// when the tab that held the connection closes mid-job.
import type { BrowserContext, Page } from '@playwright/test';
import { browserFor, liveConnections } from './fixtures/live';
import { test, expect, gotoHydrated } from './fixtures/test';
import { signIn } from './fixtures/users';
import { launchJob, waitFinished, JobPage } from './fixtures/jobs';

/** Console errors of every tab of `context`, from now on. */
function consoleErrors(context: BrowserContext) {
  const errors: string[] = [];
  const watch = (p: Page) => {
    p.on('console', (m) => {
      if (m.type() === 'error') errors.push(`${p.url()}: ${m.text()}`);
    });
    p.on('pageerror', (e) => errors.push(`${p.url()}: uncaught ${e.message}`));
  };
  context.pages().forEach(watch);
  context.on('page', watch);
  return errors;
}

/** How a tab reaches the hub (`<html data-live>`, set by live.mjs). */
function way(p: Page) {
  return p.evaluate(() => document.documentElement.dataset.live ?? '');
}

/** Its job's lines, all there, in order, none twice. */
async function expectEveryLineOnce(p: Page, lastSeq: number) {
  const job = new JobPage(p);
  await expect(p.locator('.line-count')).toHaveText(`${lastSeq} lines`, { timeout: 30_000 });
  // The stream is what is checked here, not following (jobs.spec.ts): a
  // page that stopped following is taken to its end first. (One did, with
  // eleven tabs on a loaded machine, before the viewer's fix: a scroll
  // event a frame late read lines that came meanwhile as a move up.)
  const jump = p.getByRole('button', { name: 'Jump to end' });
  if (await jump.isVisible()) await jump.click();
  await expect.poll(async () => (await job.seqs()).at(-1), { timeout: 30_000 }).toBe(lastSeq);
  const seqs = await job.seqs();
  // The log is virtualised: what is rendered is a run of consecutive seqs
  // ending at the last (no gap, no repeat); its first is at least 1.
  expect(seqs.length).toBeGreaterThan(0);
  expect(seqs).toEqual(Array.from({ length: seqs.length }, (_, i) => seqs[0] + i));
  // A line that skips ahead of the last one the page has is logged as a
  // console error (app/src/jobs/page.rs), which `consoleErrors` collects;
  // one already had is dropped before the page sees it.
}

for (const w of ['worker', 'leader'] as const) {
  test.describe(`one connection for all tabs (${w === 'worker' ? 'shared worker' : 'Web Locks leader'})`, () => {
    test('ten job pages and the dashboard share one connection, each line arrives once, an eleventh tab loads at once', async ({
      page,
      context,
    }) => {
      test.setTimeout(120_000);
      await browserFor(context, w);
      const errors = consoleErrors(context);
      await signIn(page, 'alice');
      await gotoHydrated(page, '/');
      const ids: number[] = [];
      for (let i = 0; i < 10; i++) ids.push(await launchJob(page, 'paced', 'web-2', { lines: 100 }));
      const tabs: Page[] = [];
      for (const id of ids) {
        const p = await context.newPage();
        await gotoHydrated(p, `/jobs/${id}`);
        tabs.push(p);
      }
      // Eleven tabs, one connection.
      await expect.poll(() => liveConnections(page), { timeout: 10_000 }).toBe(1);
      const ways = await Promise.all([page, ...tabs].map(way));
      if (w === 'worker') expect(new Set(ways)).toEqual(new Set(['worker']));
      else {
        expect(ways.filter((x) => x === 'leader')).toHaveLength(1);
        expect(ways.filter((x) => x === 'follower')).toHaveLength(10);
      }
      // The browser's other five connections are free: a twelfth page loads.
      const eleventh = await context.newPage();
      await eleventh.goto('/jobs', { timeout: 10_000 });
      await expect(eleventh.locator('h1')).toBeVisible({ timeout: 10_000 });
      const health = await eleventh.evaluate(async () => (await fetch('/healthz')).status);
      expect(health).toBe(200);
      await eleventh.close();

      for (const [i, id] of ids.entries()) {
        const done = await waitFinished(page.request, id, 90_000);
        expect(done.state).toBe('succeeded');
        await expectEveryLineOnce(tabs[i], done.last_seq);
      }
      // The dashboard's table followed the feed all along.
      for (const id of ids) {
        await expect(page.locator(`tr[data-job="${id}"] [data-state]`).first()).toHaveAttribute(
          'data-state',
          'succeeded',
        );
      }
      expect(await liveConnections(page)).toBe(1);
      expect(errors).toEqual([]);
    });

    test('the tab that opened the connection closes mid-job: the others go on with no gap and no repeat', async ({
      page,
      context,
    }) => {
      test.setTimeout(90_000);
      await browserFor(context, w);
      const errors = consoleErrors(context);
      await signIn(page, 'alice');
      const id = await launchJob(page, 'paced', 'web-2', { lines: 150 });
      // The first tab: the leader (it asked for the lock first), or the
      // first client of the shared worker.
      await gotoHydrated(page, `/jobs/${id}`);
      expect(await way(page)).toBe(w === 'worker' ? 'worker' : 'leader');
      const others: Page[] = [];
      for (const path of [`/jobs/${id}`, '/']) {
        const p = await context.newPage();
        await gotoHydrated(p, path);
        others.push(p);
      }
      const follower = new JobPage(others[0]);
      await expect.poll(async () => (await follower.seqs()).at(-1) ?? 0, { timeout: 20_000 }).toBeGreaterThan(20);
      const before = (await follower.seqs()).at(-1)!;
      await page.close();
      // Launched while the connection changes hands: the dashboard's table
      // shows it all the same (from the feed, or from the read its tables
      // make each time their feed is live again).
      const during = await launchJob(others[0], 'paced', 'web-2', { lines: 1 });
      // Mid-job still.
      const job = await (await others[0].request.get(`/api/jobs/${id}`)).json();
      expect(job.state).toBe('running');
      expect(job.last_seq).toBeLessThan(140);
      if (w === 'leader') {
        // Another tab took the lock and holds the connection now.
        await expect.poll(async () => (await Promise.all(others.map(way))).sort().join(), { timeout: 10_000 }).toBe(
          'follower,leader',
        );
      }
      const done = await waitFinished(others[0].request, id, 60_000);
      expect(done.last_seq).toBeGreaterThan(before);
      await expectEveryLineOnce(others[0], done.last_seq);
      for (const j of [id, during]) {
        await expect(others[1].locator(`tr[data-job="${j}"] [data-state]`).first()).toHaveAttribute(
          'data-state',
          'succeeded',
        );
      }
      await expect.poll(() => liveConnections(others[0]), { timeout: 10_000 }).toBe(1);
      expect(errors).toEqual([]);
    });
  });
}

test('without a shared worker and Web Locks each tab holds one connection, and a job opened from a list joins it', async ({
  page,
  context,
}) => {
  await browserFor(context, 'tab');
  await signIn(page, 'alice');
  await gotoHydrated(page, '/');
  expect(await way(page)).toBe('tab');
  const id = await launchJob(page, 'paced', 'web-2', { lines: 150 });
  const others = [];
  for (const path of ['/jobs', '/targets/web-2']) {
    const p = await context.newPage();
    await gotoHydrated(p, path);
    others.push(p);
  }
  await expect(page.locator(`tr[data-job="${id}"]`).first()).toBeVisible();
  // Three tabs, each with its feed: three connections, not one per table.
  await expect.poll(() => liveConnections(page), { timeout: 10_000 }).toBe(3);

  // Opened from the dashboard's table (no page load): the job's stream
  // joins the tab's connection.
  const requests: string[] = [];
  page.on('request', (r) => requests.push(`${r.method()} ${new URL(r.url()).pathname}`));
  await page.locator(`tr[data-job="${id}"] a[href="/jobs/${id}"]`).first().click();
  await expect(page).toHaveURL(new RegExp(`/jobs/${id}$`));
  const job = new JobPage(page);
  await expect(job.pill()).toHaveAttribute('data-state', 'succeeded', { timeout: 30_000 });
  await expectEveryLineOnce(page, 152);
  expect(requests.filter((r) => r.startsWith('POST /api/live/') && r.endsWith('/subscribe'))).toHaveLength(1);
  expect(requests.filter((r) => r.startsWith('GET /api/live'))).toEqual([]);
  expect(await liveConnections(page)).toBe(3);
  const done = await waitFinished(page.request, id);
  expect(done.last_seq).toBe(152);
  for (const p of others) await p.close();
  await expect.poll(() => liveConnections(page), { timeout: 10_000 }).toBe(1);
});
