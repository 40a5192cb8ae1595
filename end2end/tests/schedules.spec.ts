// /admin/schedules: each [[schedules]] entry with its next fires, pause and
// resume, and "run now" with the job it launched among the fires.
import { test, expect, gotoHydrated } from './fixtures/test';
import { signIn } from './fixtures/users';
import { waitFinished } from './fixtures/jobs';

test('a schedule shows its next fires, pauses, resumes and runs now', async ({ page }) => {
  await signIn(page, 'admin');
  await gotoHydrated(page, '/');
  await page.getByRole('navigation', { name: 'Account' }).getByRole('link', { name: 'Schedules' }).click();
  await expect(page).toHaveURL(/\/admin\/schedules$/);
  await expect(page.getByRole('heading', { level: 1, name: 'Schedules' })).toBeVisible();
  const s = page.locator('section[data-schedule="new-year"]');
  await expect(s.getByRole('heading', { name: 'new-year' })).toBeVisible();
  await expect(s).toContainText('0 3 1 1 *');
  await expect(s).toContainText('Europe/Berlin');
  await expect(s).toContainText('overlap queue');
  // Five New Year's mornings at 03:00 Berlin time: 02:00 UTC.
  const next = s.locator('ul.next-fires time');
  await expect(next).toHaveCount(5);
  for (const t of await next.all()) {
    expect(await t.getAttribute('datetime')).toMatch(/^\d{4}-01-01T02:00:00\+00:00$/);
  }
  await expect(s.locator('[data-schedule-state]')).toHaveText('active');

  await s.getByRole('button', { name: 'Pause' }).click();
  await expect(s.locator('[data-schedule-state]')).toHaveText('paused');
  await expect(s).toContainText('by admin');
  await expect(s).toContainText('None while paused.');
  // Kept: a reload shows it paused.
  await gotoHydrated(page, '/admin/schedules');
  await expect(s.locator('[data-schedule-state]')).toHaveText('paused');
  await s.getByRole('button', { name: 'Resume' }).click();
  await expect(s.locator('[data-schedule-state]')).toHaveText('active');
  await expect(s.locator('ul.next-fires time')).toHaveCount(5);

  page.once('dialog', (d) => d.accept());
  await s.getByRole('button', { name: 'Run now' }).click();
  const launched = page.getByRole('status').getByRole('link', { name: /^job \d+$/ });
  await expect(launched).toBeVisible();
  const id = Number((await launched.textContent())!.replace('job ', ''));
  expect((await waitFinished(page.request, id)).state).toBe('succeeded');
  const fire = s.locator('tr[data-fire]').first();
  await expect(fire).toHaveAttribute('data-outcome', 'launched');
  await expect(fire).toContainText(`job ${id}`);
  await expect(fire).toContainText('run now by admin');
});
