// Signing in and out, the `next` redirect, and what operators may not see.
import { test, expect, gotoHydrated } from './fixtures/test';
import { LoginPage } from './fixtures/login';
import { USERS, signIn } from './fixtures/users';

test('an anonymous visit goes to sign-in and then back to the page asked for', async ({ page }) => {
  await page.goto('/admin/users');
  await expect(page).toHaveURL(/\/login\?next=\/admin\/users$/);
  const login = new LoginPage(page);
  await login.signIn(USERS.admin.username, USERS.admin.password);
  await expect(page).toHaveURL(/\/admin\/users$/);
  await expect(page.getByRole('heading', { level: 1, name: 'Users' })).toBeVisible();
  await expect(page.getByRole('navigation', { name: 'Account' })).toContainText('admin');
});

test.describe('a wrong password', () => {
  // The login server function answers 401, which Chromium reports.
  test.use({ allowedConsoleErrors: [/status of 401/] });

  test('is refused without saying which part was wrong', async ({ page }) => {
    await page.goto('/login');
    const login = new LoginPage(page);
    await login.signIn('alice', 'not-her-password');
    await expect(login.error).toHaveText('wrong username or password');
    await expect(page).toHaveURL(/\/login/);
  });
});

test.describe('a wrong password without JavaScript', () => {
  test.use({ javaScriptEnabled: false });

  test('is refused with the same message after the plain form post', async ({ page }) => {
    await page.goto('/login');
    const login = new LoginPage(page);
    await login.signIn('alice', 'not-her-password');
    await expect(login.error).toHaveText('wrong username or password');
    await expect(page).toHaveURL(/\/login/);
  });
});

test('signing out ends the session', async ({ page }) => {
  await signIn(page, 'alice');
  // Hydrated first: a plain form post sent before the wasm has loaded ends
  // the session under the page, whose job feed then opens with a 401.
  await gotoHydrated(page, '/');
  await expect(page.getByRole('heading', { level: 1, name: 'Dashboard' })).toBeVisible();
  await page.getByRole('button', { name: 'Sign out' }).click();
  await expect(page).toHaveURL(/\/login$/);
  await page.goto('/');
  await expect(page).toHaveURL(/\/login\?next=\/$/);
});

test.describe('an operator on an admin page', () => {
  // The page's own 403 status is reported by Chromium.
  test.use({ allowedConsoleErrors: [/status of 403/] });

  test('sees the 403 page', async ({ page }) => {
    await signIn(page, 'alice');
    const res = await page.goto('/admin/users');
    expect(res?.status()).toBe(403);
    await expect(page.getByRole('heading', { name: 'Not allowed' })).toBeVisible();
    await expect(page.getByText('This page is for admins.')).toBeVisible();
    // Admin links are not offered to operators.
    await expect(page.getByRole('link', { name: 'Audit log' })).toHaveCount(0);
  });
});

test('an admin adds a user who can then sign in', async ({ page, browser }) => {
  await signIn(page, 'admin');
  await gotoHydrated(page, '/admin/users');
  const name = `op${Date.now() % 100000}`;
  await page.getByLabel('Username').fill(name);
  await page.getByLabel('Password (at least 10 characters)').fill('a-good-password');
  await page.getByRole('button', { name: 'Add user' }).click();
  await expect(page.getByRole('status')).toContainText(`Added ${name}.`);
  await expect(page.locator(`tr[data-user="${name}"]`)).toBeVisible();

  const other = await browser.newPage();
  await other.goto('/login');
  await new LoginPage(other).signIn(name, 'a-good-password');
  await expect(other).toHaveURL(/\/$/);
  await other.close();

  await page.goto(`/admin/audit?action=user`);
  await expect(page.getByRole('cell', { name, exact: true })).toBeVisible();
});
