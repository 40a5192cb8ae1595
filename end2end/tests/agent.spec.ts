// A remote agent from a browser: an admin enrols it on the Agents page (the
// token shown once), a real `opsdeck agent` process dials in with it, and
// an operator's console on the agent's target is a shell on its host, with
// typing, resize, exit code and reattach as on a local target.
import { test, expect, gotoHydrated } from './fixtures/test';
import { signIn } from './fixtures/users';
import { AgentProcess } from './fixtures/agent';
import { browserFor } from './fixtures/live';

const NAME = 'e2e-edge';

test.describe.serial('an agent', () => {
  let agent: AgentProcess;

  test.afterAll(() => agent?.stop());

  test('is enrolled on the Agents page and shows online once it dials in', async ({ page, baseURL }) => {
    await signIn(page, 'admin');
    await gotoHydrated(page, '/admin/agents');
    await page.getByLabel('Name').fill(NAME);
    await page.getByRole('button', { name: 'Enrol' }).click();
    const token = (await page.getByTestId('new-agent-token').textContent())?.trim() ?? '';
    expect(token).toMatch(/^oda_/);

    agent = new AgentProcess(baseURL!, NAME);
    agent.start(token);
    const row = page.locator(`tr[data-agent="${NAME}"]`);
    await expect(row.locator('[data-agent-status]')).toHaveText('online', { timeout: 20_000 });
    await expect(row).toContainText('edge-1');
    // The token is shown once: a reload shows the list, not the token.
    await page.reload();
    await expect(page.getByTestId('new-agent-token')).toHaveCount(0);
  });

  test('runs a console on its host: typing, resize, reattach and the exit code', async ({ page }) => {
    await signIn(page, 'alice');
    await page.setViewportSize({ width: 1280, height: 800 });
    await page.goto('/targets/edge-1/console');
    const rows = page.locator('.xterm-rows');
    await expect(page.locator('[data-status="connected"]')).toBeVisible({ timeout: 15_000 });
    await page.locator('.terminal-box').click();
    await page.keyboard.type('echo "agent-$((6*7)) size=$(stty size | tr " " x)"');
    await page.keyboard.press('Enter');
    await expect(rows).toContainText('agent-42', { timeout: 10_000 });

    // A smaller window: the PTY on the agent's host gets the new size.
    const sizes = async () =>
      [...((await rows.textContent()) ?? '').matchAll(/size=(\d+x\d+)/g)].map((m) => m[1]);
    const before = (await sizes())[0];
    await page.setViewportSize({ width: 800, height: 500 });
    await expect(async () => {
      await page.keyboard.type('echo "size=$(stty size | tr " " x)"');
      await page.keyboard.press('Enter');
      const all = await sizes();
      expect(all.length).toBeGreaterThan(1);
      expect(all[all.length - 1]).not.toBe(before);
    }).toPass({ timeout: 15_000 });

    // A reload reattaches to the same shell on the agent's host.
    await page.keyboard.type('MARK=edge-$((40+2))');
    await page.keyboard.press('Enter');
    await page.reload();
    await expect(page.locator('[data-status="connected"]')).toContainText('Reconnected', { timeout: 15_000 });
    await page.locator('.terminal-box').click();
    await page.keyboard.type('echo $MARK');
    await page.keyboard.press('Enter');
    await expect(rows).toContainText('edge-42', { timeout: 10_000 });

    await page.keyboard.type('exit 4');
    await page.keyboard.press('Enter');
    await expect(page.locator('[data-status="ended"]')).toContainText('exited with code 4', { timeout: 10_000 });
  });
});

// The Agents page's live updates come over the page's feed, which only
// carries what happens after it connects. An agent that dials in first
// (the page's feed held back here until it has) must still show online:
// the page reads the list again when its feed connects.
test('an agent that dialled in before the page went live still shows online', async ({ page, context }) => {
  const name = 'e2e-early';
  // The page holds its own live connection (docs/live.md), where
  // `page.route` can hold it back (it cannot reach a shared worker's).
  await browserFor(context, 'tab');
  await signIn(page, 'admin');
  const held: import('@playwright/test').Route[] = [];
  const live = /\/api\/live(\?|$)/;
  await page.route(live, (route) => {
    held.push(route);
  });
  await gotoHydrated(page, '/admin/agents');
  await page.getByLabel('Name').fill(name);
  await page.getByRole('button', { name: 'Enrol' }).click();
  const token = (await page.getByTestId('new-agent-token').textContent())?.trim() ?? '';
  const row = page.locator(`tr[data-agent="${name}"]`);
  await expect(row.locator('[data-agent-status]')).toHaveText('offline');

  const early = new AgentProcess(new URL(page.url()).origin, name);
  try {
    early.start(token);
    // Another tab sees it online: it has dialled in.
    const other = await context.newPage();
    await expect(async () => {
      await other.goto('/admin/agents');
      await expect(other.locator(`tr[data-agent="${name}"] [data-agent-status]`)).toHaveText('online', {
        timeout: 1_000,
      });
    }, early.log).toPass({ timeout: 20_000 });
    await other.close();
    // Only now does this page's feed connect.
    expect(held.length).toBeGreaterThan(0);
    for (const route of held) await route.continue();
    await page.unroute(live);
    await expect(row.locator('[data-agent-status]')).toHaveText('online', { timeout: 10_000 });
  } finally {
    early.stop();
  }
});
