// An order's timeline: the five saga steps light up as their events arrive,
// with times; outcomes are marked.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  DECLINED_CARD,
  activityOf,
  launch,
  openPage,
  placeOrder,
  shot,
  signIn,
  uniqueUser,
  waitForBadge,
  waitForIndicator,
} from './helpers.mjs';

const STEPS = ['payment', 'order', 'inventory', 'billing', 'delivery'];

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

/** [{step, state, times}] of the timeline under `root`. */
const stepsOf = (page, root) => page.locator(`${root} [data-step]`).evaluateAll((els) => els.map((el) => ({
  step: el.dataset.step,
  state: el.dataset.state,
  times: [...el.querySelectorAll('[data-entries] time')].map((t) => t.textContent),
})));

test('the five steps light up live, then on the order page', { timeout: 60_000 }, async () => {
  const { page, context, assertClean } = await openPage(browser);
  await signIn(page, uniqueUser('tracker'));

  // Watch the latest-order timeline: each step's state changes, as they happen.
  const placed = await placeOrder(page, { qty: { 'SKU-4': 3 } });
  assert.equal(placed.http, 202);
  await page.waitForFunction(() => {
    const steps = [...document.querySelectorAll('#latest [data-step]')];
    return steps.length === 5 && steps.every((s) => s.dataset.state === 'done');
  });
  const live = await stepsOf(page, '#latest');
  assert.deepEqual(live.map((s) => s.step), STEPS);
  for (const s of live) assert.ok(s.times.length >= 1 && s.times.every((t) => /^\d\d:\d\d:\d\d\.\d{3}$/.test(t)), JSON.stringify(s));
  assert.equal(await page.locator('#latest [data-outcome] [data-role="status"]').textContent(), 'confirmed');

  // The order's own page, rendered by the server, shows the same.
  await page.locator('#latest').getByRole('link', { name: 'Open its timeline' }).click();
  await page.waitForURL(new RegExp(`/orders/${placed.order_id}$`));
  assert.equal(await page.locator('h1').textContent(), `Order ${placed.order_id}`);
  const full = await stepsOf(page, '#timeline');
  assert.deepEqual(full.map((s) => [s.step, s.state]), STEPS.map((s) => [s, 'done']));
  for (const s of full) assert.ok(s.times.length >= 1, `${s.step} has no time`);
  assert.match(await page.locator('[data-step="billing"]').textContent(), /invoice INV-/);
  assert.match(await page.locator('[data-step="delivery"]').textContent(), /slot /);
  assert.match(await page.locator('#conn').textContent(), /Live/);
  await shot(page, 'order-timeline-confirmed');
  assertClean();
  await context.close();
});

test('declined and rejected orders are marked as such', { timeout: 60_000 }, async () => {
  const { page, context, assertClean } = await openPage(browser);
  await signIn(page, uniqueUser('marked'));

  const declined = await placeOrder(page, { card: DECLINED_CARD });
  assert.equal(declined.http, 402);
  await page.waitForFunction(() => document.querySelector('#latest [data-outcome]')?.dataset.status === 'cancelled');
  await page.goto(`/orders/${declined.order_id}`);
  const d = Object.fromEntries((await stepsOf(page, '#timeline')).map((s) => [s.step, s.state]));
  assert.deepEqual(d, { payment: 'failed', order: 'failed', inventory: 'skipped', billing: 'skipped', delivery: 'skipped' });
  assert.match(await page.locator('[data-outcome]').textContent(), /cancelled\s+payment declined/);
  await shot(page, 'order-timeline-declined');

  await page.goto('/');
  const rejected = await placeOrder(page, { outOfStock: true });
  await page.waitForFunction(() => document.querySelector('#latest [data-step="payment"]')?.dataset.state === 'refunded');
  await page.goto(`/orders/${rejected.order_id}`);
  const r = Object.fromEntries((await stepsOf(page, '#timeline')).map((s) => [s.step, s.state]));
  assert.equal(r.payment, 'refunded');
  assert.equal(r.order, 'failed');
  assert.equal(r.inventory, 'failed');
  assert.match(await page.locator('[data-step="inventory"]').textContent(), /out of stock · SKU OUT-OF-STOCK/);
  await shot(page, 'order-timeline-rejected');
  assertClean([/402/]);
  await context.close();
});

test("an unknown or foreign order is a 404 page", { timeout: 60_000 }, async () => {
  const { page, context } = await openPage(browser);
  await signIn(page, uniqueUser('lost'));
  const res = await page.goto('/orders/ord_doesnotexist');
  assert.equal(res.status(), 404);
  assert.match(await page.locator('h1').textContent(), /Not found/);
  await context.close();
});

test('pages follow new events live and show an unknown status as it is', { timeout: 60_000 }, async () => {
  const { page, context, assertClean } = await openPage(browser);
  // Sit between page and server, so the test can add a frame of its own:
  // an `order.shipped` (a status the pages do not know yet) for a real order.
  const link = { page: null };
  await page.routeWebSocket((url) => url.pathname === '/ws', (ws) => {
    const server = ws.connectToServer();
    link.page = ws;
    server.onMessage((message) => ws.send(message));
  });
  const user = uniqueUser('shipped');
  await signIn(page, user);
  const placed = await placeOrder(page);
  await waitForBadge(page, placed.order_id, 'confirmed');
  let version = 2;
  const ship = (eventId) => link.page.send(JSON.stringify({
    type: 'event',
    // No cursor: a frame without one is never taken for a repeat, and the
    // client's resume point stays the real one.
    event: {
      event_id: eventId,
      type: 'order.shipped',
      order_id: placed.order_id,
      user_id: user,
      occurred_at: new Date().toISOString(),
      status: 'shipped',
      version: ++version,
      data: { carrier: 'test' },
    },
  }));

  // My orders: the badge moves on, with the neutral look of an unknown status, and is logged.
  await page.goto('/orders');
  await waitForIndicator(page, /^Live$/);
  ship('test-shipped-1');
  await waitForBadge(page, placed.order_id, 'shipped');
  const badge = page.locator(`[id="order-${placed.order_id}"] [data-role="status"]`);
  assert.equal(await badge.getAttribute('class'), 'badge badge--other');
  assert.deepEqual((await activityOf(page, placed.order_id)).at(-1), { version: 3, status: 'shipped' });

  // The order's page: the outcome follows, the event is listed with the others.
  await page.goto(`/orders/${placed.order_id}`);
  await waitForIndicator(page, /^Live$/);
  ship('test-shipped-2');
  await page.waitForFunction(() => document.querySelector('[data-outcome]')?.dataset.status === 'shipped');
  assert.equal(await page.locator('[data-outcome] [data-role="status"]').textContent(), 'shipped');
  assert.equal(await page.locator('[data-other]').isVisible(), true);
  assert.match(await page.locator('[data-other-list]').textContent(), /order\.shipped/);
  assert.equal(await page.locator('[data-step="order"]').getAttribute('data-state'), 'done');
  await shot(page, 'order-timeline-unknown-status');
  assertClean();
  await context.close();
});
