// The foundation's vertical slice: server rendering, hydration, a server
// function writing through sea-orm, progressive enhancement, health.
import { test, expect } from './fixtures/test';
import { Dashboard } from './fixtures/dashboard';
import { signIn } from './fixtures/users';

test.beforeEach(async ({ page }) => {
  await signIn(page, 'admin');
});

test('the dashboard is rendered on the server and then hydrated', async ({ page }) => {
  // The server's HTML already holds the page, before any wasm runs.
  const res = await page.request.get('/');
  expect(res.status()).toBe(200);
  const html = await res.text();
  // (`<h1>Dashboard<!></h1>`: erase_components ends a list of children
  // with a hydration marker.)
  expect(html).toMatch(/<h1>Dashboard(<!>)?<\/h1>/);
  expect(html).toContain('500 characters left');
  expect(html).toMatch(/<script type="importmap" nonce="[0-9a-f]{32}">/);

  // The counter only reacts to typing once the wasm has hydrated the page.
  const dash = new Dashboard(page);
  await dash.goto();
  await dash.typeNoteWhenHydrated('hello');
  await expect(dash.counter).toHaveText('495 characters left');
});

test('a note posted from the form is stored and listed', async ({ page }) => {
  const dash = new Dashboard(page);
  await dash.goto();
  const text = `rotated TLS key on web-1 (${Date.now()})`;
  await dash.typeNoteWhenHydrated(text);
  await dash.addNote.click();
  await expect(dash.notes.first()).toContainText(text);
  // The form is cleared for the next note.
  await expect(dash.note).toHaveValue('');
  // It was stored: a fresh load renders it on the server.
  await page.reload();
  await expect(dash.notes.filter({ hasText: text })).toHaveCount(1);
});

test.describe('a blank note', () => {
  // The server function answers 400, which Chromium reports on the console.
  test.use({ allowedConsoleErrors: [/status of 400/] });

  test('is refused with a message', async ({ page }) => {
    const dash = new Dashboard(page);
    await dash.goto();
    await dash.typeNoteWhenHydrated('   ');
    await dash.addNote.click();
    await expect(page.getByRole('alert')).toHaveText('write something first');
  });
});

test.describe('without JavaScript', () => {
  test.use({ javaScriptEnabled: false });

  test('the note form still works by plain form posts', async ({ page }) => {
    const dash = new Dashboard(page);
    await dash.goto();
    const text = `no-js note ${Date.now()}`;
    await dash.note.fill(text);
    await dash.addNote.click();
    await expect(page).toHaveURL(/\/\??$/);
    await expect(dash.notes.filter({ hasText: text })).toHaveCount(1);
  });

  test('a refused note shows its error after the redirect', async ({ page }) => {
    const dash = new Dashboard(page);
    await dash.goto();
    await dash.note.fill('   ');
    await dash.addNote.click();
    await expect(page.getByRole('alert')).toHaveText('write something first');
  });
});

test('health answers ok after a database query', async ({ request }) => {
  const res = await request.get('/healthz');
  expect(res.status()).toBe(200);
  // The node that answered and its database (docs/cluster.md).
  const body = await res.json();
  expect(body).toMatchObject({ status: 'ok', database: { engine: 'sqlite', answered: true } });
  expect(body.node).toMatch(/^[a-z0-9][a-z0-9_.-]*-\d+$/);
});

test.describe('an unknown page', () => {
  // Chromium reports the page's own 404 status on the console.
  test.use({ allowedConsoleErrors: [/status of 404/] });

  test('is a real 404 with a way back', async ({ page }) => {
    const res = await page.goto('/no/such/page');
    expect(res?.status()).toBe(404);
    await expect(page.getByRole('heading', { name: 'Not found' })).toBeVisible();
    await expect(page.getByRole('link', { name: 'Back to the dashboard' })).toBeVisible();
  });
});

test('the front-end packages are served by opsdeck itself', async ({ request }) => {
  const res = await request.get('/vendor/xterm/xterm.mjs');
  expect(res.status()).toBe(200);
  expect(await res.text()).toContain('Terminal');
  const shim = await request.get('/xterm-lazy.mjs');
  expect(shim.status()).toBe(200);
  expect(await shim.text()).toContain("import('/vendor/xterm/xterm.mjs')");
});
