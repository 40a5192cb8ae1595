// The released binary, unpacked and started from another directory with a
// fresh database (packaging/test-dist.sh): its pages load the site it
// carries, hydrate, and stream a job.
import { test, expect, gotoHydrated } from '../tests/fixtures/test';
import { signIn } from '../tests/fixtures/users';
import { JobPage } from '../tests/fixtures/jobs';
import { Dashboard } from '../tests/fixtures/dashboard';

test('the dashboard of the released binary hydrates and a job launched there streams', async ({ page }) => {
  const assets: { url: string; status: number; encoding?: string; cache?: string }[] = [];
  page.on('response', (r) => {
    const path = new URL(r.url()).pathname;
    if (path.startsWith('/pkg/')) {
      const h = r.headers();
      assets.push({ url: path, status: r.status(), encoding: h['content-encoding'], cache: h['cache-control'] });
    }
  });

  await signIn(page, 'alice');
  const dashboard = new Dashboard(page);
  await dashboard.goto();
  // Only the wasm updates the note's counter as one types.
  await dashboard.typeNoteWhenHydrated('shipped');

  // The JS, wasm and CSS came from inside the binary, by their hashed
  // names, compressed, cacheable for a year.
  for (const ext of ['js', 'wasm', 'css']) {
    const a = assets.find((x) => new RegExp(`^/pkg/opsdeck\\.[0-9a-f]{16}\\.${ext}$`).test(x.url));
    expect(a, `a hashed .${ext} was loaded (saw ${JSON.stringify(assets)})`).toBeTruthy();
    expect(a!.status).toBe(200);
    expect(['br', 'gzip']).toContain(a!.encoding);
    expect(a!.cache).toBe('public, max-age=31536000, immutable');
  }
  // Styled: the stylesheet applied (the header is not the browser's default).
  const font = await page.locator('body').evaluate((b) => getComputedStyle(b).fontFamily);
  expect(font).not.toBe('"Times New Roman"');

  await gotoHydrated(page, '/launch/demo-backup?target=web-1');
  await page.getByLabel('seconds').fill('3');
  await page.getByRole('button', { name: 'Launch' }).click();
  await expect(page).toHaveURL(/\/jobs\/\d+$/);
  const job = new JobPage(page);
  await expect(job.lines().nth(2)).toBeVisible({ timeout: 15_000 });
  await expect(job.pill()).toHaveText('succeeded', { timeout: 30_000 });
});
