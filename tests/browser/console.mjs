// End-to-end test of the ops console in a real browser (Debian's Chromium,
// driven by playwright-core). Started by tests/it/console.rs, which runs the
// real daemon against MariaDB and the broker, creates the sagas this script
// works on, and checks the database afterwards. Input, all required:
//
//   CONSOLE_BASE        the daemon, e.g. http://127.0.0.1:41234
//   CONSOLE_TOKEN       its ORDER_SAGA_OPS_TOKEN
//   CONSOLE_STUCK_ID    a saga stuck in RESERVING_INVENTORY (cancelled here)
//   CONSOLE_STALE_ID    a saga cancelled behind the page's back (stale action)
//   CONSOLE_POISONED_ID a quarantined saga with a dead letter
//   CONSOLE_REVIEW_ID   a saga in PENDING_REVIEW (out of stock)
//   CONSOLE_OVERDUE_ID  a quarantined saga in AWAITING_PAYMENT whose payment timer is 6 min overdue
//   CONSOLE_BULK_REGION the region of the sagas the bulk job cancels
//   CONSOLE_BULK_COUNT  how many there are
//   CONSOLE_ARTIFACTS   where screenshots go
//   CHROMIUM            the browser executable (/usr/bin/chromium)
//
// Prints one line per step; exits non-zero at the first failed expectation.
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const need = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set (this script is run by tests/it/console.rs)`);
  return v;
};
const BASE = need('CONSOLE_BASE');
const TOKEN = need('CONSOLE_TOKEN');
const STUCK = need('CONSOLE_STUCK_ID');
const STALE = need('CONSOLE_STALE_ID');
const POISONED = need('CONSOLE_POISONED_ID');
const REVIEW = need('CONSOLE_REVIEW_ID');
const OVERDUE = need('CONSOLE_OVERDUE_ID');
const BULK_REGION = need('CONSOLE_BULK_REGION');
const BULK_COUNT = Number(need('CONSOLE_BULK_COUNT'));
const ART = need('CONSOLE_ARTIFACTS');
const ACTOR = 'e2e-operator';
mkdirSync(ART, { recursive: true });

const require = createRequire(import.meta.url);
const AXE = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
const T = 20_000; // generous bound for one UI expectation (a wait, not a threshold)

let stepNo = 0;
const step = (what) => console.log(`[console e2e] ${++stepNo}. ${what}`);

const browser = await chromium.launch({
  executablePath: need('CHROMIUM'),
  headless: true,
  // Chromium as root in a sandbox-less CI container, with nothing phoning home.
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'],
});
const context = await browser.newContext({ viewport: { width: 1366, height: 900 } });
const requests = [];
const problems = [];
context.on('request', (r) => requests.push(r.url()));
context.on('page', (p) => watch(p));
function watch(p) {
  p.on('console', (m) => {
    // A CSP violation or a script error is a failure, whatever the page shows.
    // Refusals the page shows, and the requests that fail while offline on purpose.
    if (m.type() === 'error' && !/status of (401|403|409|422)|ERR_INTERNET_DISCONNECTED/.test(m.text())) problems.push(`console: ${m.text()}`);
  });
  p.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
}

async function shot(page, name) {
  await page.screenshot({ path: join(ART, `${name}.png`), fullPage: true });
}

async function axe(page, name) {
  const result = await page.evaluate(`${AXE}\n;axe.run(document, { resultTypes: ['violations'] })`);
  const serious = result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  writeFileSync(join(ART, `axe-${name}.json`), JSON.stringify(result.violations, null, 2));
  assert.deepEqual(serious.map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(' ')).join('; ')})`), [],
    `axe found serious accessibility violations on ${name}`);
}

try {
  const page = await context.newPage();

  step('the console answers with a strict Content-Security-Policy and a sign-in form');
  const resp = await page.goto(`${BASE}/ops/ui`);
  const csp = resp.headers()['content-security-policy'] || '';
  assert.match(csp, /script-src 'self'/);
  assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
  await page.getByLabel('Ops token').waitFor({ timeout: T });
  assert.ok(await page.locator('#top').isHidden(), 'no "Signed in as" header on the sign-in page');
  await shot(page, '01-sign-in');
  await axe(page, 'sign-in');

  step('a wrong token is refused with a clear message');
  await page.getByLabel('Ops token').fill('not-the-token-at-all');
  await page.getByLabel(/Your name/).fill(ACTOR);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByText('That is not the ops token.').waitFor({ timeout: T });
  assert.equal(await page.getByLabel('Ops token').inputValue(), '', 'the wrong token is cleared for another try');

  step('sign in with the token and a name');
  await page.getByLabel('Ops token').fill(TOKEN);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByText(`Signed in as ${ACTOR}`).waitFor({ timeout: T });
  assert.ok(!page.url().includes(TOKEN), 'the token never appears in a URL');
  const cookies = await context.cookies(`${BASE}/ops/ui`);
  const sessionCookie = cookies.find((c) => c.name === 'order_saga_ops');
  assert.ok(sessionCookie, 'a session cookie is set');
  assert.equal(sessionCookie.httpOnly, true);
  assert.equal(sessionCookie.sameSite, 'Strict');

  step('the overview leads with the sagas that need a human, most urgent first, each with why');
  await page.getByRole('heading', { name: 'Overview' }).waitFor({ timeout: T });
  const attention = page.locator('#attention tbody tr');
  await attention.first().waitFor({ timeout: T });
  const needs = await attention.evaluateAll((rows) => rows.map((r) => [r.cells[0].innerText, r.dataset.need]));
  // Quarantined first (two), then awaiting an operator, then no reply.
  assert.deepEqual(needs.slice(0, 2).map(([id, n]) => [n, id]).sort(), [['quarantined', OVERDUE], ['quarantined', POISONED]].sort());
  assert.deepEqual(needs.slice(2, 4), [[REVIEW, 'awaiting_operator'], [STUCK, 'no_reply']]);
  assert.match(await attention.nth(2).innerText(), /Waiting for an operator for .* in PENDING_REVIEW: Out of stock/);
  assert.match(await attention.nth(3).innerText(), /No reply to its reserve_inventory command for \d+ min/);
  assert.ok(await page.evaluate(() => {
    const a = document.getElementById('attention');
    const cards = document.querySelector('.cards');
    return a.compareDocumentPosition(cards) === Node.DOCUMENT_POSITION_FOLLOWING;
  }), 'the list comes before the cards');

  // The consumer table lists every inbound partition of the group.
  const partitionRows = await page.locator('#lag tbody tr').count();
  assert.ok(partitionRows > 0, 'the partitions any replica reported');
  assert.match(await page.locator('.cards').innerText(), new RegExp(`of ${partitionRows} partitions`));

  // Sagas in flight per definition version (one version loaded here: the newest).
  const v1 = page.locator('#versions tbody tr').first();
  assert.match(await v1.innerText(), /^v1 \(newest: new sagas start here\)\s+[1-9]\d*/);

  step('the overview shows the stuck saga and links to it');
  const stuckLink = page.getByRole('link', { name: /^Stuck \(over max dwell\): [1-9]/ });
  await stuckLink.waitFor({ timeout: T });
  await shot(page, '02-overview');
  await axe(page, 'overview');
  await page.emulateMedia({ colorScheme: 'dark' });
  await shot(page, '02-overview-dark');
  await axe(page, 'overview-dark');
  await page.emulateMedia({ colorScheme: 'light' });

  step('keyboard: each page puts focus on its heading; links work with Enter; a refresh keeps the focus');
  assert.equal(await page.evaluate(() => document.activeElement.textContent), 'Overview');
  await stuckLink.focus();
  const before = await page.locator('main .form-row .muted').first().innerText();
  await page.waitForFunction((b) => document.querySelector('main .form-row .muted').innerText !== b, before, { timeout: T });
  assert.equal(await page.evaluate(() => document.activeElement.getAttribute('aria-label') || ''), await stuckLink.getAttribute('aria-label'),
    'the overview redrew and the focus is still on the same link');
  await page.keyboard.press('Enter');

  step('the stuck list has the saga, its age against max dwell');
  await page.getByRole('heading', { name: 'Sagas' }).waitFor({ timeout: T });
  const row = page.getByRole('row').filter({ has: page.getByRole('link', { name: STUCK, exact: true }) });
  await row.waitFor({ timeout: T });
  assert.match(await row.innerText(), /RESERVING_INVENTORY/);
  assert.match(await row.innerText(), /stuck/);
  await shot(page, '03-sagas-stuck');
  await axe(page, 'sagas');

  step('the list finds one order by its id, and a bad filter value is explained, the form kept');
  await page.goto(`${BASE}/ops/ui#/sagas?order_id=${REVIEW}`);
  await page.getByRole('heading', { name: 'Sagas' }).waitFor({ timeout: T });
  await page.getByRole('link', { name: REVIEW, exact: true }).waitFor({ timeout: T });
  assert.equal(await page.locator('main table tbody tr').count(), 1);
  await page.goto(`${BASE}/ops/ui#/sagas?order_id=abc`);
  await page.locator('#filter-error').getByText('order_id must be a positive number').waitFor({ timeout: T });
  assert.ok(await page.getByRole('button', { name: 'Apply filters' }).isVisible(), 'the form stays to fix the value');

  step('the daemon unreachable: a banner says so, the data on screen says how old it is, and the page recovers by itself');
  assert.match(await page.locator('#freshness').innerText(), /^Data as of /);
  await page.locator('nav [data-nav=overview]').click();
  await page.getByRole('heading', { name: 'Overview' }).waitFor({ timeout: T });
  await context.setOffline(true);
  const banner = page.locator('#offline');
  await banner.getByText('The daemon does not answer').waitFor({ timeout: T });
  assert.match(await banner.innerText(), /may be out of date/);
  await page.locator('nav [data-nav=sagas]').click();
  await page.getByRole('heading', { name: 'Waiting for the daemon' }).waitFor({ timeout: T });
  await shot(page, '03b-daemon-unreachable');
  await context.setOffline(false);
  await page.getByRole('heading', { name: 'Sagas' }).waitFor({ timeout: T });
  assert.ok(await banner.isHidden(), 'the banner goes once the daemon answers');

  step('one saga: diagram with the current state, timeline, offered actions');
  await row.getByRole('link', { name: STUCK, exact: true }).click();
  await page.getByRole('heading', { name: new RegExp(`^Order ${STUCK}`) }).waitFor({ timeout: T });
  await page.locator('.diagram g.node.current[data-state="RESERVING_INVENTORY"]').waitFor({ timeout: T });
  assert.equal(await page.locator('.diagram g.edge.taken').count(), 1, 'the start transition is the path so far');
  const timelineText = await page.locator('table.timeline').innerText();
  assert.match(timelineText, /order\.created\.v1/);
  assert.match(timelineText, /ORDER_CREATED/);
  assert.equal(await page.locator('#order-status').innerText(), 'PENDING');
  const offered = await page.getByRole('group', { name: 'Allowed actions' }).getByRole('button').allInnerTexts();
  assert.ok(offered.includes('Cancel the order') && offered.includes('Re-send the reserve_inventory command'), `offered: ${offered}`);
  assert.ok(!offered.some((a) => a.startsWith('Release')), 'release is not offered to a saga that is not quarantined');
  await shot(page, '04-saga');
  await axe(page, 'saga');

  assert.match(await page.locator('#why-here').innerText(), /^No reply: No reply to its reserve_inventory command for \d+ min/);
  step('dry-run a cancel: the effects are shown, nothing is written');
  await page.getByRole('button', { name: 'Cancel the order', exact: true }).click();
  // What it does, in words, before anything else.
  assert.match(await page.locator('#action-about').innerText(), /Cancel the order and compensate/);
  await page.getByLabel('Reason').fill('e2e: customer asked by phone');
  await page.getByRole('button', { name: 'Dry run' }).click();
  const report = page.locator('.report');
  await report.getByText('Dry run — nothing was written').waitFor({ timeout: T });
  // In words, first: every consequence.
  const said = await report.locator('ul.consequences li').allInnerTexts();
  assert.ok(said.includes('The saga moves from RESERVING_INVENTORY to CANCELLED.'), said.join(' | '));
  assert.ok(said.includes('The order\'s status becomes CANCELLED (was PENDING).'), said.join(' | '));
  assert.ok(said.some((c) => /^Sends inventory\.release\.v1 \(command id \S+\)\.$/.test(c)), said.join(' | '));
  // Every write, one click away.
  await report.locator('summary', { hasText: 'Every write' }).click();
  assert.match(await report.innerText(), /RESERVING_INVENTORY → CANCELLED/);
  assert.equal(await page.locator('#order-status').innerText(), 'PENDING', 'a dry run changes nothing');
  await shot(page, '05-dry-run');

  step('confirm: the order becomes CANCELLED and the audit row appears');
  await page.getByRole('button', { name: 'Confirm: Cancel the order' }).click();
  await page.locator('#order-status', { hasText: 'CANCELLED' }).waitFor({ timeout: T });
  const audit = page.locator('section[aria-labelledby="audit-h"]');
  await audit.getByText('e2e: customer asked by phone').waitFor({ timeout: T });
  assert.match(await audit.innerText(), new RegExp(`cancel\\s+applied\\s+${ACTOR}`));
  await page.locator('.diagram g.node.current[data-state="CANCELLED"]').waitFor({ timeout: T });
  await shot(page, '06-cancelled');

  step('a stale action is refused: the saga moved on between dry run and confirm');
  await page.goto(`${BASE}/ops/ui#/sagas/${STALE}`);
  await page.getByRole('heading', { name: new RegExp(`^Order ${STALE}`) }).waitFor({ timeout: T });
  await page.getByRole('button', { name: 'Cancel the order', exact: true }).click();
  await page.getByLabel('Reason').fill('e2e: stale attempt');
  await page.getByRole('button', { name: 'Dry run' }).click();
  await page.getByRole('button', { name: 'Confirm: Cancel the order' }).waitFor({ timeout: T });
  // Someone else acts on the same saga in another tab.
  const other = await context.newPage();
  await other.goto(`${BASE}/ops/ui#/sagas/${STALE}`);
  await other.getByRole('button', { name: 'Cancel the order', exact: true }).click();
  await other.getByLabel('Reason').fill('e2e: the other operator was faster');
  await other.getByRole('button', { name: 'Dry run' }).click();
  await other.getByRole('button', { name: 'Confirm: Cancel the order' }).click();
  await other.locator('#order-status', { hasText: 'CANCELLED' }).waitFor({ timeout: T });
  await other.close();
  // The first page is not redrawn under the operator, but says the saga changed.
  await page.locator('#saga-changed').getByText('This saga changed since the page was loaded: now CANCELLED').waitFor({ timeout: T });
  await page.getByRole('button', { name: 'Confirm: Cancel the order' }).click();
  const stale = page.getByRole('alert').filter({ hasText: 'The saga moved on — reload.' });
  await stale.waitFor({ timeout: T });
  assert.match(await stale.innerText(), /Nothing was applied/);
  // Who changed it and what.
  assert.match(await stale.innerText(), /v2: cancel\.requested \(RESERVING_INVENTORY → CANCELLED\) by e2e-operator/);
  await shot(page, '07-stale');
  await stale.getByRole('button', { name: 'Reload' }).click();
  await page.locator('#order-status', { hasText: 'CANCELLED' }).waitFor({ timeout: T });

  step('out of stock: only what changes something is offered, each in plain words');
  await page.goto(`${BASE}/ops/ui#/sagas/${REVIEW}`);
  await page.getByRole('heading', { name: new RegExp(`^Order ${REVIEW}`) }).waitFor({ timeout: T });
  const why = await page.locator('#why-here').innerText();
  assert.match(why, /^Awaiting operator: Waiting for an operator for .* in PENDING_REVIEW: Out of stock/, why);
  assert.match(why, /Last reason: OUT_OF_STOCK/, why);
  // The diagram: full labels (the edge that explains the failure was cut), "start" in the caption too.
  assert.ok(await page.locator('.diagram text', { hasText: /^inventory\.reservation\.failed\.v1$/ }).count() > 0, 'full edge label');
  assert.match(await page.locator('.diagram figcaption').innerText(), /^Path taken: start → RESERVING_INVENTORY → PENDING_REVIEW\./);
  const reviewOffers = await page.getByRole('group', { name: 'Allowed actions' }).getByRole('button').allInnerTexts();
  assert.ok(reviewOffers.includes('Try the inventory reservation again') && reviewOffers.includes('Cancel the order'), reviewOffers.join(', '));
  assert.ok(!reviewOffers.some((a) => a.startsWith('Re-send')), `re-sending a command the participant already answered is not offered: ${reviewOffers}`);

  step('skipping the poison of a saga whose payment window closed: the dry run says the timer fires at once, and where that leads');
  await page.goto(`${BASE}/ops/ui#/sagas/${OVERDUE}`);
  await page.getByRole('heading', { name: new RegExp(`^Order ${OVERDUE}`) }).waitFor({ timeout: T });
  await page.getByRole('button', { name: 'Skip the poison event', exact: true }).click();
  await page.getByLabel('Reason').fill('e2e: the bad message was a test');
  await page.getByRole('button', { name: 'Dry run' }).click();
  const overdueSaid = page.locator('.report ul.consequences li');
  await overdueSaid.first().waitFor({ timeout: T });
  const overdueText = await overdueSaid.allInnerTexts();
  assert.ok(overdueText.includes('The quarantine is lifted: its parked events are applied now.'), overdueText.join(' | '));
  assert.ok(overdueText.some((c) => /^Timer payment_timeout is overdue by [67] min: it fires at once → CANCELLED \(PAYMENT_TIMEOUT\), order CANCELLED\.$/.test(c)),
    overdueText.join(' | '));
  await shot(page, '07c-overdue-dry-run');

  step('a dead letter: its headers readable, the reason first, the page no wider than the window');
  await page.goto(`${BASE}/ops/ui#/sagas/${POISONED}`);
  await page.getByRole('heading', { name: new RegExp(`^Order ${POISONED}`) }).waitFor({ timeout: T });
  const dlq = page.locator('section[aria-labelledby="dlq-h"] dl.dlq-headers');
  await dlq.waitFor({ timeout: T });
  assert.equal(await dlq.locator('dt').first().innerText(), 'dlq_error');
  assert.ok(!(await page.locator('main, body').first().innerText()).includes('[object '), 'no [object …] text');
  const [scrollW, viewW] = await page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
  assert.ok(scrollW <= viewW, `the page is ${scrollW} px wide in a ${viewW} px window`);
  await shot(page, '07b-dead-letter');
  // Its undecodable event cannot be replayed: release is not offered, skip poison is.
  const poisonedOffers = await page.locator('[role=group][aria-label="Allowed actions"] button').evaluateAll((b) => b.map((x) => x.dataset.action));
  assert.ok(poisonedOffers.includes('skip_poison') && !poisonedOffers.includes('release'), poisonedOffers.join(', '));

  step(`bulk: select region ${BULK_REGION}, preview, run the job to completion`);
  await page.goto(`${BASE}/ops/ui#/bulk?tenant_region=${encodeURIComponent(BULK_REGION)}`);
  await page.getByRole('heading', { name: 'Bulk action' }).waitFor({ timeout: T });
  await page.locator('#bulk-action').selectOption('cancel');
  await page.getByLabel('Reason').fill('e2e: region closed');
  // An action the sagas' state refuses: the preview says how many and why, and offers no start.
  await page.locator('#bulk-action').selectOption('release');
  await page.getByRole('button', { name: 'Preview' }).click();
  const refusals = page.locator('#bulk-refusals');
  await refusals.getByText(`${BULK_COUNT} of the ${BULK_COUNT} checked would be refused`).waitFor({ timeout: T });
  assert.match(await refusals.innerText(), /the saga is not quarantined/);
  assert.ok(await page.locator('#bulk-start').isDisabled(), 'an all-refused job is not offered');
  await page.locator('#bulk-action').selectOption('cancel');
  // The preview uses the filter on screen, not the last applied one.
  await page.locator('#f-tenant_region').fill('nowhere');
  await page.getByRole('button', { name: 'Preview' }).click();
  await page.getByText('Preview: 0 match, the job would act on 0.').waitFor({ timeout: T });
  assert.equal(await page.locator('#bulk-selection').innerText(), 'Selection: tenant_region=nowhere.');
  // "Apply filters" keeps the reason typed so far.
  await page.locator('#f-tenant_region').fill(BULK_REGION);
  await page.getByRole('button', { name: 'Apply filters' }).click();
  assert.equal(await page.getByLabel('Reason').inputValue(), 'e2e: region closed');
  await page.getByRole('button', { name: 'Preview' }).click();
  await page.getByText(`Preview: ${BULK_COUNT} match, the job would act on ${BULK_COUNT}.`).waitFor({ timeout: T });
  assert.equal(await page.locator('#bulk-refusals').innerText(), `All ${BULK_COUNT} checked accept cancel now.`);
  const sample = page.locator('#bulk-sample');
  assert.ok(await sample.locator('a[href^="#/sagas/"]').count() > 0, 'the sample links to the sagas');
  assert.match(await sample.innerText(), /^\d+@v\d+/, 'order@version labels, not raw URLs');
  await shot(page, '08-bulk-preview');
  await axe(page, 'bulk');
  // What is on screen must be what was previewed.
  await page.getByLabel('Reason').fill('e2e: region closed (edited)');
  await page.getByRole('button', { name: `Start: cancel (compensate) on ${BULK_COUNT} sagas` }).click();
  await page.getByRole('alert').filter({ hasText: 'changed since the preview' }).waitFor({ timeout: T });
  await page.getByRole('button', { name: 'Preview' }).click();
  await page.getByText(`Preview: ${BULK_COUNT} match, the job would act on ${BULK_COUNT}.`).waitFor({ timeout: T });
  await page.getByRole('button', { name: `Start: cancel (compensate) on ${BULK_COUNT} sagas` }).click();
  await page.getByText(`${BULK_COUNT} of ${BULK_COUNT} done: ${BULK_COUNT} applied, 0 refused — finished.`).waitFor({ timeout: 60_000 });
  assert.equal(await page.locator('#bulk-progress').getAttribute('max'), String(BULK_COUNT));
  const results = page.locator('table').last();
  assert.equal(await results.locator('tbody tr').count(), BULK_COUNT, 'one result per saga');
  assert.equal(await results.getByText('applied').count(), BULK_COUNT);
  assert.ok(await page.locator('#job-stop').isHidden(), 'a finished job offers no Stop');
  await shot(page, '09-bulk-done');
  const jobUrl = page.url();
  // The job is stored: it is listed on the bulk page and survives a reload.
  await page.getByRole('link', { name: '← Bulk actions' }).click();
  const listed = page.locator('#bulk-jobs tbody tr').first();
  await listed.getByText('finished').waitFor({ timeout: T });
  assert.match(await listed.innerText(), new RegExp(`${BULK_COUNT} of ${BULK_COUNT}`));
  await page.goto(jobUrl);
  await page.getByText(`${BULK_COUNT} of ${BULK_COUNT} done`).waitFor({ timeout: T });

  step('the audit page lists the actions under the signed-in name');
  await page.getByRole('link', { name: 'Audit', exact: true }).click();
  await page.getByRole('heading', { name: 'Audit trail' }).waitFor({ timeout: T });
  assert.match(await page.locator('main').innerText(), /e2e: region closed/);
  await axe(page, 'audit');
  // One job's actions, from the job's page: each row links back to it.
  await page.goto(jobUrl);
  await page.getByRole('link', { name: 'Its actions in the audit trail' }).click();
  await page.getByRole('heading', { name: 'Audit trail' }).waitFor({ timeout: T });
  await page.locator('#a-job_id').waitFor({ timeout: T });
  const jobRows = page.locator('main table tbody tr');
  await jobRows.first().waitFor({ timeout: T });
  assert.equal(await jobRows.count(), BULK_COUNT, 'the job\'s actions, and only those');
  assert.equal(await jobRows.getByRole('link', { name: jobUrl.split('/').pop().slice(0, 8) }).count(), BULK_COUNT);

  step('a candidate definition is previewed against the sagas in flight, by file, before it is deployed');
  await page.getByRole('link', { name: 'Definitions', exact: true }).click();
  await page.getByRole('heading', { name: 'Definitions' }).waitFor({ timeout: T });
  // AWAITING_PAYMENT answers payment.authorized.v1 with another reason.
  const candidate = readFileSync(new URL('../../sagas/order.toml', import.meta.url), 'utf8')
    .replace('reason = "PAYMENT_AUTHORIZED"', 'reason = "PAYMENT_ACCEPTED"');
  await page.getByLabel('Definition file').setInputFiles({ name: 'order.toml', mimeType: 'text/plain', buffer: Buffer.from(candidate) });
  await page.waitForFunction(() => document.getElementById('definition-text').value.includes('PAYMENT_ACCEPTED'));
  await page.getByRole('button', { name: 'Preview against the sagas in flight' }).click();
  const verdict = page.locator('#definition-preview strong');
  await verdict.waitFor({ timeout: T });
  assert.match(await verdict.innerText(), /^\d+ of \d+ sagas in flight would behave differently under version 1\.$/);
  assert.match(await page.locator('#definition-sample li').first().innerText(), /AWAITING_PAYMENT\): from its current state: payment\.authorized\.v1:.*PAYMENT_ACCEPTED/);
  await axe(page, 'definitions');
  // An invalid file: each problem with its line.
  await page.getByLabel('Or its text').fill(candidate.replace('after = "15m"', 'after = "soon"'));
  await page.getByRole('button', { name: 'Preview against the sagas in flight' }).click();
  await page.getByText(/^line \d+: timer payment_timeout/).waitFor({ timeout: T });

  step('at 800 px, light and dark: no page wider than the window, axe finds nothing serious');
  await page.setViewportSize({ width: 800, height: 900 });
  for (const [name, hash, heading] of [['overview', '#/', 'Overview'], ['sagas', '#/sagas', 'Sagas'],
    ['saga', `#/sagas/${STUCK}`, new RegExp(`^Order ${STUCK}`)], ['bulk', '#/bulk', 'Bulk action'], ['audit', '#/audit', 'Audit trail'],
    ['definitions', '#/definitions', 'Definitions']]) {
    await page.goto(`${BASE}/ops/ui${hash}`);
    await page.getByRole('heading', { name: heading }).first().waitFor({ timeout: T });
    for (const scheme of ['light', 'dark']) {
      await page.emulateMedia({ colorScheme: scheme });
      const [scrollW, viewW] = await page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
      assert.ok(scrollW <= viewW, `${name} (${scheme}) is ${scrollW} px wide in a ${viewW} px window`);
      await axe(page, `${name}-800-${scheme}`);
    }
    await shot(page, `11-${name}-800`);
  }
  await page.emulateMedia({ colorScheme: 'light' });
  await page.setViewportSize({ width: 1366, height: 900 });

  step('requests without the CSRF token or without the session are refused');
  const csrf = await page.evaluate(async () => (await (await fetch('/ops/ui/session')).json()).csrf_token);
  assert.equal((await page.request.get(`${BASE}/ops/overview`, { headers: { 'X-CSRF-Token': csrf } })).status(), 200);
  assert.equal((await page.request.get(`${BASE}/ops/overview`)).status(), 403, 'session cookie without CSRF token');
  const forged = await page.request.post(`${BASE}/ops/sagas/${STUCK}/actions`, {
    headers: { 'X-CSRF-Token': 'f'.repeat(64) },
    data: { action: 'retry_step', expected_version: 1, reason: 'forged' },
  });
  assert.equal(forged.status(), 403, 'a wrong CSRF token');
  const bare = await fetch(`${BASE}/ops/overview`, { headers: { 'X-CSRF-Token': csrf } });
  assert.equal(bare.status, 401, 'CSRF token without the session');

  step('a session that ends between the dry run and the confirm: the console says nothing was applied, and brings you back');
  await page.goto(`${BASE}/ops/ui#/sagas/${REVIEW}`);
  await page.getByRole('button', { name: 'Cancel the order', exact: true }).click();
  await page.getByLabel('Reason').fill('e2e: session ends meanwhile');
  await page.getByRole('button', { name: 'Dry run' }).click();
  const confirmLate = page.getByRole('button', { name: 'Confirm: Cancel the order' });
  await confirmLate.waitFor({ timeout: T });
  const ended = await fetch(`${BASE}/ops/sessions`, { method: 'DELETE', headers: { Authorization: `Bearer ${TOKEN}` } });
  assert.equal(ended.status, 200, 'sign out everywhere');
  await confirmLate.click();
  await page.getByText('Your session ended before this was sent: nothing was applied.').waitFor({ timeout: T });
  assert.ok(await page.locator('#top').isHidden(), 'the header is hidden once signed out');
  await page.getByLabel('Ops token').fill(TOKEN);
  await page.getByLabel(/Your name/).fill(ACTOR);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: new RegExp(`^Order ${REVIEW}`) }).waitFor({ timeout: T });
  assert.match(await page.locator('#why-here').innerText(), /PENDING_REVIEW/, 'back on the same saga, which was not cancelled');

  step('sign out: back to sign-in, and the old session is dead on the server');
  await page.goto(`${BASE}/ops/ui#/`);
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByLabel('Ops token').waitFor({ timeout: T });
  const replay = await fetch(`${BASE}/ops/overview`, {
    headers: { Cookie: `order_saga_ops=${sessionCookie.value}`, 'X-CSRF-Token': csrf },
  });
  assert.equal(replay.status, 401, 'the signed-out session id no longer works');
  await page.goto(`${BASE}/ops/ui#/sagas/${STUCK}`);
  await page.getByLabel('Ops token').waitFor({ timeout: T });
  await shot(page, '10-signed-out');

  step('the console used nothing but its own origin');
  const foreign = requests.filter((u) => !u.startsWith(`${BASE}/`));
  assert.deepEqual(foreign, [], 'requests beyond the daemon');
  assert.deepEqual(problems, [], 'script errors or CSP violations in the page');
  console.log(`[console e2e] passed: ${stepNo} steps, ${requests.length} requests, screenshots in ${ART}`);
} finally {
  await browser.close();
}
