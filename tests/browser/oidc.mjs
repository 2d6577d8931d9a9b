// The ops console's sign-in through a real OpenID Provider (oidc-provider,
// tests/browser/idp.mjs) in Debian's Chromium. Started by tests/it/console.rs,
// which runs the daemon (console at http://localhost:…) and the provider
// (http://127.0.0.1:…: another site), and checks the database afterwards.
// Input, all required:
//
//   CONSOLE_BASE      the daemon, e.g. http://localhost:41234
//   CONSOLE_SAGA_ID   a saga in RESERVING_INVENTORY (alice cancels it)
//   CONSOLE_ARTIFACTS where screenshots go
//   CHROMIUM          the browser executable (/usr/bin/chromium)
//
// Prints one line per step; exits non-zero at the first failed expectation.
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const need = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set (this script is run by tests/it/console.rs)`);
  return v;
};
const BASE = need('CONSOLE_BASE');
const SAGA = need('CONSOLE_SAGA_ID');
const ART = need('CONSOLE_ARTIFACTS');
mkdirSync(ART, { recursive: true });
const T = 20_000; // generous bound for one UI expectation (a wait, not a threshold)

let stepNo = 0;
const step = (what) => console.log(`[oidc e2e] ${++stepNo}. ${what}`);
const problems = [];

const browser = await chromium.launch({
  executablePath: need('CHROMIUM'),
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'],
});

/** A fresh browser (no provider session, no console cookie). */
async function freshPage() {
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  const page = await context.newPage();
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    // The console's own pages only (the provider's development pages load
    // fonts from the internet, which this machine cannot reach).
    if (!page.url().startsWith(BASE)) return;
    if (m.type() === 'error' && !/status of (401|403)/.test(m.text())) problems.push(`console: ${m.text()} (${page.url()})`);
  });
  return page;
}

/** From the console's sign-in page through the provider's login and consent pages. */
async function signInAs(page, login) {
  const seen = [];
  const record = (r) => seen.push(r.url());
  page.on('request', record);
  await page.goto(`${BASE}/ops/ui`);
  await page.getByRole('link', { name: 'Sign in with your identity provider' }).click();
  // The provider's own pages (another origin).
  await page.locator('input[name=login]').waitFor({ timeout: T });
  assert.ok(!page.url().startsWith(BASE), `at the provider, not the console: ${page.url()}`);
  await page.fill('input[name=login]', login);
  await page.fill('input[name=password]', 'any password: the development login page accepts it');
  await page.click('button[type=submit]');
  await page.getByRole('button', { name: 'Continue' }).click({ timeout: T });
  await page.waitForURL((u) => u.toString().startsWith(`${BASE}/ops/ui`), { timeout: T });
  page.off('request', record);
  // The authorization request the console sent the browser with.
  const authorize = seen.map((u) => new URL(u)).find((u) => u.searchParams.get('response_type') === 'code');
  assert.ok(authorize, `no authorization request among ${seen.join(' ')}`);
  return authorize;
}

async function csrfOf(page) {
  return page.evaluate(async () => (await (await fetch('/ops/ui/session')).json()).csrf_token);
}

async function call(page, method, path, csrf, body) {
  return page.evaluate(async ([m, p, c, b]) => {
    const r = await fetch(p, { method: m, headers: { 'X-CSRF-Token': c, 'Content-Type': 'application/json' },
      body: b === null ? undefined : JSON.stringify(b) });
    return { status: r.status, json: await r.json().catch(() => null) };
  }, [method, path, csrf, body ?? null]);
}

try {
  step('the sign-in page offers the identity provider');
  const first = await freshPage();
  await first.goto(`${BASE}/ops/ui`);
  await first.getByRole('link', { name: 'Sign in with your identity provider' }).waitFor({ timeout: T });
  await first.screenshot({ path: join(ART, 'oidc-01-sign-in.png'), fullPage: true });

  step('an account without an ops role signs in at the provider but gets no session');
  await signInAs(first, 'mallory');
  await first.getByText('your account has no ops role').waitFor({ timeout: T });
  assert.ok(!first.url().includes('sign_in_error'), 'the error code is removed from the address');
  assert.equal((await first.evaluate(async () => (await fetch('/ops/ui/session')).status)), 401);
  await first.screenshot({ path: join(ART, 'oidc-02-no-role.png'), fullPage: true });

  step('alice signs in through the provider with PKCE and state, and is act');
  const alice = await freshPage();
  const authorize = await signInAs(alice, 'alice');
  assert.equal(authorize.searchParams.get('code_challenge_method'), 'S256');
  assert.ok(authorize.searchParams.get('state') && authorize.searchParams.get('nonce'));
  await alice.locator('#actor').filter({ hasText: 'alice' }).waitFor({ timeout: T });
  assert.equal(await alice.locator('#role').textContent(), 'act');
  await alice.getByRole('heading', { name: /Overview/ }).waitFor({ timeout: T });
  await alice.screenshot({ path: join(ART, 'oidc-03-signed-in.png'), fullPage: true });

  step('act may act on one saga (audited as alice) but not run bulk actions');
  const csrf = await csrfOf(alice);
  const saga = await call(alice, 'GET', `/ops/sagas/${SAGA}`, csrf);
  assert.equal(saga.status, 200);
  const cancel = await call(alice, 'POST', `/ops/sagas/${SAGA}/actions`, csrf,
    { action: 'cancel', expected_version: saga.json.saga.version, reason: 'customer called (oidc e2e)' });
  assert.equal(cancel.status, 200, JSON.stringify(cancel.json));
  const bulk = await call(alice, 'POST', '/ops/bulk', csrf,
    { filter: {}, action: { action: 'cancel' }, reason: 'x', dry_run: true });
  assert.equal(bulk.status, 403);
  assert.equal(bulk.json.error.code, 'insufficient_scope');
  await alice.goto(`${BASE}/ops/ui#/bulk`);
  await alice.locator('#bulk-role').waitFor({ timeout: T });
  assert.ok(await alice.getByRole('button', { name: 'Preview' }).isDisabled(), 'bulk preview is not offered to act');

  step('a callback this browser did not start is refused');
  const other = await freshPage();
  await other.goto(`${BASE}/ops/ui/callback?code=stolen&state=forged`);
  await other.getByText('not started in this browser').waitFor({ timeout: T });
  assert.equal((await other.evaluate(async () => (await fetch('/ops/ui/session')).status)), 401);

  step('sign out ends the session');
  await alice.getByRole('button', { name: 'Sign out' }).click();
  await alice.getByRole('link', { name: 'Sign in with your identity provider' }).waitFor({ timeout: T });
  assert.equal((await alice.evaluate(async () => (await fetch('/ops/ui/session')).status)), 401);

  assert.deepEqual(problems, [], 'script errors or CSP violations in the page');
  console.log(`[oidc e2e] passed: ${stepNo} steps, screenshots in ${ART}`);
} finally {
  await browser.close();
}
