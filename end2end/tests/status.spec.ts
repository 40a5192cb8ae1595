// A target's actual state on the dashboard, live. web-3's probe follows a
// flag file this test raises and lowers (probed every second); web-4's is
// probed once an hour, so its change right after a job on it can only be
// the probe that follows every job (end2end/opsdeck.e2e.toml).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { type Page } from '@playwright/test';
import { test, expect, gotoHydrated } from './fixtures/test';
import { signIn } from './fixtures/users';
import { launchJob, waitFinished } from './fixtures/jobs';

/** The flag file a target's probe looks for (the server runs in the repository's root). */
const flag = (target: string) => path.resolve(__dirname, '../../target/e2e', `${target}.up`);

/** A target card's state line on the dashboard. */
function stateOn(page: Page, card: string) {
  return page.getByRole('article', { name: card }).getByRole('status', { name: 'Actual state' });
}

test('a probe that flips between 0 and 1 shows up and down on the dashboard live', async ({ page }) => {
  fs.rmSync(flag('web-3'), { force: true });
  await signIn(page, 'admin');
  await gotoHydrated(page, '/');
  const state = stateOn(page, 'Web server 3 (probed)');
  await expect(state).toHaveAttribute('data-state', 'down');
  await expect(state).toContainText('down');
  await expect(state).toContainText('`test` exited with code 1');
  fs.writeFileSync(flag('web-3'), '');
  await expect(state).toHaveAttribute('data-state', 'up');
  await expect(state.locator('.pill')).toHaveText('up');
  fs.rmSync(flag('web-3'));
  await expect(state).toHaveAttribute('data-state', 'down');
  await expect(state).toContainText(/checked \d+s ago/);
});

test('the state is probed again right after a job on the target, and its last error shows until a success', async ({ page }) => {
  await signIn(page, 'admin');
  // Whatever an earlier run left: lowered by a job, so probed down.
  await waitFinished(page.request, await launchJob(page, 'lower-flag', 'web-4'));
  await gotoHydrated(page, '/');
  const card = page.getByRole('article', { name: 'Web server 4 (probed after jobs)' });
  const state = stateOn(page, 'Web server 4 (probed after jobs)');
  await expect(state).toHaveAttribute('data-state', 'down');

  const failed = await launchJob(page, 'broken-deploy', 'web-4');
  expect((await waitFinished(page.request, failed)).state).toBe('failed');
  const lastError = card.getByRole('note', { name: 'Last error' });
  await expect(lastError).toContainText(`Last error: #${failed} exited with code 2`);
  await expect(lastError.getByRole('link', { name: `#${failed}` })).toHaveAttribute('href', `/jobs/${failed}`);

  const raised = await launchJob(page, 'raise-flag', 'web-4');
  expect((await waitFinished(page.request, raised)).state).toBe('succeeded');
  // An hour between interval probes: only the probe after the job says up.
  await expect(state).toHaveAttribute('data-state', 'up', { timeout: 5_000 });
  await expect(lastError).toHaveCount(0);

  await gotoHydrated(page, '/targets/web-4');
  await expect(page.getByRole('status', { name: 'Actual state' })).toHaveAttribute('data-state', 'up');
});
