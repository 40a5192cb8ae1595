// One live connection per tab (docs/live.md): the feed and the job stream
// of a page travel as subscriptions of one `/api/live` connection, a job
// opened from a list joins the tab's connection, and every line arrives
// exactly once.
import { test, expect, gotoHydrated } from './fixtures/test';
import { signIn } from './fixtures/users';
import { launchJob, waitFinished, JobPage } from './fixtures/jobs';

/** The server's count of open live connections (`/metrics`). */
async function liveConnections(page: import('@playwright/test').Page) {
  const text = await (await page.request.get('/metrics')).text();
  const m = text.match(/^opsdeck_live_connections(?:\{[^}]*\})? (\d+)/m);
  return m ? Number(m[1]) : NaN;
}

test('each tab holds one live connection, and a job opened from a list streams every line once over it', async ({
  page,
  context,
}) => {
  await signIn(page, 'alice');
  await gotoHydrated(page, '/');
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
  await expect.poll(async () => (await job.seqs()).at(-1), { timeout: 10_000 }).toBe(152);
  // What is rendered runs on seq by seq: no line twice, none missing.
  const seqs = await job.seqs();
  expect(seqs).toEqual(Array.from({ length: seqs.length }, (_, i) => seqs[0] + i));
  expect(requests.filter((r) => r.startsWith('POST /api/live/') && r.endsWith('/subscribe'))).toHaveLength(1);
  expect(requests.filter((r) => r.startsWith('GET /api/live'))).toEqual([]);
  expect(await liveConnections(page)).toBe(3);
  const done = await waitFinished(page.request, id);
  expect(done.last_seq).toBe(152);
  for (const p of others) await p.close();
  await expect.poll(() => liveConnections(page), { timeout: 10_000 }).toBe(1);
});
