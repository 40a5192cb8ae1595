// The pictures: a target's history (one bar per job, per-template figures)
// and the dashboard's load chart, live from the feed; and the README's
// screenshot of a target page with its chart.
import { test, expect, gotoHydrated } from './fixtures/test';
import { signIn } from './fixtures/users';
import { launchJob, waitFinished } from './fixtures/jobs';

type Outcome = 'ok' | 'bad' | 'warn' | 'muted';

/** The colour each outcome's CSS variable resolves to on this page. */
async function outcomeColours(page: import('@playwright/test').Page) {
  return page.evaluate(() => {
    const probe = document.createElement('span');
    document.body.append(probe);
    const out: Record<string, string> = {};
    for (const v of ['ok', 'bad', 'warn', 'muted', 'info']) {
      probe.style.color = `var(--${v})`;
      out[v] = getComputedStyle(probe).color;
    }
    probe.remove();
    return out;
  });
}

test('a target with 20 finished jobs of mixed outcomes shows 20 bars in their colours, and a bar opens its job', async ({ page }) => {
  test.setTimeout(180_000);
  await signIn(page, 'alice');
  const origin = new URL(test.info().project.use.baseURL!).origin;
  // 9 succeeded (of different lengths), 6 failed, 2 with warnings, 3
  // cancelled while queued (they never ran): 20 jobs, one at a time.
  const plan: [string, Record<string, unknown>, Outcome][] = [
    ['sleep', { seconds: 0 }, 'ok'],
    ['flaky', { exit_code: 2 }, 'bad'],
    ['sleep', { seconds: 2 }, 'ok'],
    ['demo-backup', { seconds: 1, warnings: true }, 'warn'],
    ['sleep', { seconds: 1 }, 'ok'],
    ['flaky', { exit_code: 1 }, 'bad'],
    ['sleep', { seconds: 300 }, 'muted'],
    ['sleep', { seconds: 3 }, 'ok'],
    ['flaky', { exit_code: 4 }, 'bad'],
    ['sleep', { seconds: 0 }, 'ok'],
    ['sleep', { seconds: 300 }, 'muted'],
    ['flaky', { exit_code: 2 }, 'bad'],
    ['sleep', { seconds: 1 }, 'ok'],
    ['demo-backup', { seconds: 1, warnings: true }, 'warn'],
    ['sleep', { seconds: 2 }, 'ok'],
    ['flaky', { exit_code: 3 }, 'bad'],
    ['sleep', { seconds: 300 }, 'muted'],
    ['sleep', { seconds: 0 }, 'ok'],
    ['flaky', { exit_code: 1 }, 'bad'],
    ['sleep', { seconds: 1 }, 'ok'],
  ];
  const ids: number[] = [];
  for (const [template, params, outcome] of plan) {
    const id = await launchJob(page, template, 'charts-1', params);
    if (outcome === 'muted') {
      const res = await page.request.post(`/api/jobs/${id}/cancel`, { headers: { origin } });
      expect(res.status(), await res.text()).toBe(200);
    }
    ids.push(id);
  }
  for (const id of ids) await waitFinished(page.request, id, 60_000);

  await page.setViewportSize({ width: 1280, height: 1000 });
  await gotoHydrated(page, '/targets/charts-1');
  const bars = page.locator('.job-bars .bar');
  await expect(bars).toHaveCount(20);
  const colours = await outcomeColours(page);
  // Oldest on the left: the bars are in launch order.
  expect(await bars.evaluateAll((els) => els.map((e) => Number(e.getAttribute('data-job'))))).toEqual(ids);
  for (let i = 0; i < ids.length; i++) {
    const bar = page.locator(`.job-bars .bar[data-job="${ids[i]}"]`);
    const want = plan[i][2];
    await expect(bar, `job ${ids[i]}`).toHaveClass(new RegExp(`\\bbar ${want}\\b`));
    const fill = await bar.locator('.b').evaluate((el) => getComputedStyle(el).fill);
    expect(fill, `the colour of job ${ids[i]} (${want})`).toBe(colours[want]);
  }
  // A job that never ran is a stub; the longest bar is the 3 s sleep.
  const height = (id: number) =>
    page.locator(`.job-bars .bar[data-job="${id}"] .b`).evaluate((el) => Number(el.getAttribute('height')));
  expect(await height(ids[6])).toBeLessThanOrEqual(2);
  expect(await height(ids[7])).toBeGreaterThan(await height(ids[2]));
  // Per template, over 30 days.
  const row = (t: string) => page.locator(`table.template-stats tr[data-template="${t}"]`);
  await expect(row('sleep').locator('td').nth(0)).toHaveText('12');
  await expect(row('sleep').locator('.rate-text')).toHaveText('100%');
  await expect(row('flaky').locator('.rate-text')).toHaveText('0%');
  await expect(row('demo-backup').locator('td').nth(1)).toContainText('2 with warnings');
  // The text equivalent lists every job.
  await expect(page.locator('.job-chart table.visually-hidden tbody tr')).toHaveCount(20);

  // Live: a new job gets its bar, and its colour when it ends.
  const live = await launchJob(page, 'sleep', 'charts-1', { seconds: 1 });
  const liveBar = page.locator(`.job-bars .bar[data-job="${live}"]`);
  await expect(liveBar).toHaveClass(/\bbar ok\b/, { timeout: 20_000 });
  await expect(bars).toHaveCount(21);
  await expect(row('sleep').locator('td').nth(0)).toHaveText('13');
  await page.locator('.history').scrollIntoViewIfNeeded();
  await page.screenshot({ path: 'artifacts/target-page.png' });

  // A click on a bar opens its job.
  await page.locator(`.job-bars .bar[data-job="${ids[5]}"] a`).click();
  await expect(page).toHaveURL(new RegExp(`/jobs/${ids[5]}$`));
  await expect(page.getByRole('heading', { level: 1 })).toContainText(`Job #${ids[5]}`);
  // …whose parameters show by their labels.
  await expect(page.locator('.job-params [data-param="exit_code"] dt')).toHaveText('Exit code');
});

test('the dashboard charts running and queued jobs and asks again when a job changes', async ({ page }) => {
  await signIn(page, 'alice');
  await gotoHydrated(page, '/');
  const slots = page.locator('.load-bars .slot');
  await expect(slots).toHaveCount(36);
  await expect(page.locator('.load-bars')).toHaveAttribute('aria-label', /at most \d+ running and \d+ queued at once/);
  await expect(page.locator('.table-wrap[data-feed="live"]').first()).toBeVisible();
  const asked = page.waitForRequest((r) => r.url().includes('/api/recent_activity'), { timeout: 15_000 });
  const id = await launchJob(page, 'sleep', 'charts-1', { seconds: 2 });
  await asked;
  // It ran in the last interval, at least.
  await waitFinished(page.request, id);
  await page.reload();
  await expect
    .poll(async () => Number(await slots.last().getAttribute('data-running')))
    .toBeGreaterThanOrEqual(1);
});
