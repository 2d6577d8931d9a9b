// Bulk jobs in a real browser (Debian's Chromium): a running job is stopped
// from its page, and a job whose daemon was killed mid-way is listed after
// the restart, resumed by the new daemon, and finishes. Started twice by
// tests/it/console.rs, around a daemon restart. Input, all required:
//
//   CONSOLE_BASE      the daemon, e.g. http://127.0.0.1:41234
//   CONSOLE_TOKEN     its ORDER_SAGA_OPS_TOKEN
//   JOBS_PHASE        `stop` (before the restart) or `resumed` (after)
//   JOBS_REGION       stop: the region whose sagas the stopped job cancels
//   JOBS_TOTAL        stop: how many; resumed: how many the resumed job has
//   JOBS_RESUMED_ID   resumed: the job the killed daemon was running
//   CONSOLE_ARTIFACTS where screenshots go
//   CHROMIUM          the browser executable (/usr/bin/chromium)
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
const PHASE = need('JOBS_PHASE');
const TOTAL = Number(need('JOBS_TOTAL'));
const ART = need('CONSOLE_ARTIFACTS');
mkdirSync(ART, { recursive: true });
const T = 20_000; // generous bound for one UI expectation (a wait, not a threshold)
let stepNo = 0;
const step = (what) => console.log(`[jobs e2e ${PHASE}] ${++stepNo}. ${what}`);

const browser = await chromium.launch({
  executablePath: need('CHROMIUM'),
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'],
});
try {
  const page = await (await browser.newContext({ viewport: { width: 1280, height: 860 } })).newPage();
  const problems = [];
  page.on('pageerror', (e) => problems.push(e.message));
  await page.goto(`${BASE}/ops/ui`);
  await page.getByLabel('Ops token').fill(need('CONSOLE_TOKEN'));
  await page.getByLabel(/Your name/).fill('e2e-operator');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Overview' }).waitFor({ timeout: T });

  if (PHASE === 'stop') {
    step('start a bulk cancel and stop it from its page before it is done');
    const region = need('JOBS_REGION');
    await page.goto(`${BASE}/ops/ui#/bulk?tenant_region=${encodeURIComponent(region)}`);
    await page.getByRole('heading', { name: 'Bulk action' }).waitFor({ timeout: T });
    await page.locator('#bulk-action').selectOption('cancel');
    await page.getByLabel('Reason').fill('e2e: stop me');
    await page.getByRole('button', { name: 'Preview' }).click();
    await page.getByRole('button', { name: `Start: cancel (compensate) on ${TOTAL} sagas` }).click();
    const stop = page.getByRole('button', { name: 'Stop this job' });
    await stop.waitFor({ timeout: T });
    await stop.click();
    const counts = page.locator('#bulk-counts');
    await counts.getByText('stopped by e2e-operator').waitFor({ timeout: T });
    const done = Number((await counts.innerText()).split(' ')[0]);
    assert.ok(done < TOTAL, `stopped before the end: ${await counts.innerText()}`);
    assert.ok(await stop.isHidden(), 'a stopped job offers no Stop');
    const cancelled = await page.locator('table tbody tr').filter({ hasText: 'cancelled' }).count();
    assert.equal(cancelled, TOTAL - done, 'every saga it did not reach is marked cancelled');
    await page.screenshot({ path: join(ART, 'jobs-01-stopped.png'), fullPage: true });
  } else {
    const id = need('JOBS_RESUMED_ID');
    step('after the restart the jobs are listed, the interrupted one resumed by the new daemon');
    await page.goto(`${BASE}/ops/ui#/bulk`);
    const rows = page.locator('#bulk-jobs tbody tr');
    await rows.filter({ hasText: 'cancelled' }).first().waitFor({ timeout: T });
    await rows.filter({ hasText: id.slice(0, 8) }).waitFor({ timeout: T });
    await page.goto(`${BASE}/ops/ui#/bulk/jobs/${id}`);
    // The new daemon takes it over once its runner has been silent for 30 s.
    await page.getByText(`${TOTAL} of ${TOTAL} done: ${TOTAL} applied, 0 refused — finished.`).waitFor({ timeout: 120_000 });
    await page.getByText(/Resumed 1 time\(s\) by another replica/).waitFor({ timeout: T });
    await page.screenshot({ path: join(ART, 'jobs-02-resumed.png'), fullPage: true });
  }
  assert.deepEqual(problems, [], 'script errors in the page');
  console.log(`[jobs e2e ${PHASE}] passed: ${stepNo} steps`);
} finally {
  await browser.close();
}
