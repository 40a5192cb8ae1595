// /admin/webhooks: each [[notify]] hook with its delivery log.
import { test, expect, gotoHydrated } from './fixtures/test';
import { signIn } from './fixtures/users';
import { launchJob, waitFinished } from './fixtures/jobs';

test('a failed job shows as a pending delivery, with why, in its hook\'s log', async ({ page }) => {
  await signIn(page, 'admin');
  const id = await launchJob(page, 'flaky', 'web-1', { exit_code: 2 });
  expect((await waitFinished(page.request, id)).state).toBe('failed');
  const hook = page.locator('section[data-hook="nobody-listens"]');
  // The worker posts within about half a second; the page shows what is stored.
  await expect(async () => {
    await gotoHydrated(page, '/admin/webhooks');
    await expect(hook.locator('tr[data-delivery]').first()).toContainText('cannot connect', { timeout: 1_000 });
  }).toPass({ timeout: 15_000 });
  await expect(page.getByRole('heading', { level: 1, name: 'Webhooks' })).toBeVisible();
  await expect(hook.getByRole('heading', { name: 'nobody-listens' })).toBeVisible();
  await expect(hook).toContainText('http://127.0.0.1:9/…');
  await expect(hook).toContainText('job.failed (only templates flaky)');
  const row = hook.locator('tr[data-delivery]').first();
  await expect(row).toContainText('job.failed');
  await expect(row.locator('[data-delivery-state]')).toHaveText('pending');
  await expect(page.getByRole('navigation', { name: 'Account' }).getByRole('link', { name: 'Webhooks' })).toBeVisible();
});
