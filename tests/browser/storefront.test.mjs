// The storefront: sign in, place orders, watch their statuses change in
// "My orders" without a reload.

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
} from './helpers.mjs';

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

test('signed out, the storefront offers the dev sign-in', { timeout: 60_000 }, async () => {
  const { page, context, assertClean } = await openPage(browser);
  await page.goto('/');
  assert.equal(await page.locator('#conn [data-role="label"]').textContent(), 'Not signed in');
  for (const name of ['alice', 'bob', 'carol']) {
    assert.ok(await page.getByRole('button', { name: `Sign in as ${name}` }).isVisible());
  }
  await shot(page, 'storefront-signed-out');
  // A bad name is refused with a message next to the field.
  await page.getByLabel('Or type a user name').fill('no spaces please');
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  assert.match(await page.locator('#user_id-error').textContent(), /letters, digits/);
  assert.equal(await page.getByLabel('Or type a user name').getAttribute('aria-invalid'), 'true');
  assertClean([/422/]); // the refused sign-in answers 422
  await context.close();
});

test('an order goes pending then confirmed in My orders, live', { timeout: 60_000 }, async () => {
  const { page, context, assertClean } = await openPage(browser);
  const user = uniqueUser('shopper');
  await signIn(page, user);
  await page.evaluate(() => { window.__sameDocument = true; });

  const placed = await placeOrder(page, { qty: { 'SKU-1': 2, 'SKU-3': 1 } });
  assert.equal(placed.http, 202);
  assert.equal(placed.status, 'pending');
  assert.match(await page.locator('#order-result').textContent(), /Order placed/);
  await waitForBadge(page, placed.order_id, 'confirmed');

  // Both statuses were shown, in order, each once.
  assert.deepEqual(await activityOf(page, placed.order_id), [
    { version: 1, status: 'pending' },
    { version: 2, status: 'confirmed' },
  ]);
  const row = page.locator(`[id="order-${placed.order_id}"]`);
  assert.match(await row.locator('[data-role="items"]').textContent(), /2 × SKU-1, 1 × SKU-3/);
  // No reload happened.
  assert.equal(await page.evaluate(() => window.__sameDocument), true);
  await shot(page, 'storefront-confirmed');
  assertClean();
  await context.close();
});

test('a declined card and an out-of-stock item both end cancelled', { timeout: 60_000 }, async () => {
  const { page, context, assertClean } = await openPage(browser);
  await signIn(page, uniqueUser('unlucky'));

  const declined = await placeOrder(page, { card: DECLINED_CARD });
  assert.equal(declined.http, 402);
  assert.equal(declined.error, 'payment_declined');
  assert.match(await page.locator('#order-result').textContent(), /Payment declined/);
  await waitForBadge(page, declined.order_id, 'cancelled');

  const rejected = await placeOrder(page, { outOfStock: true });
  assert.equal(rejected.http, 202);
  await waitForBadge(page, rejected.order_id, 'cancelled');
  assert.deepEqual(await activityOf(page, rejected.order_id), [
    { version: 1, status: 'pending' },
    { version: 2, status: 'cancelled' },
  ]);
  assert.deepEqual(await activityOf(page, declined.order_id), [{ version: 1, status: 'cancelled' }]);

  // The latest order's live timeline: inventory rejected, payment refunded, the rest not reached.
  const latest = page.locator('#latest');
  await page.waitForFunction(() => document.querySelector('#latest [data-step="payment"]')?.dataset.state === 'refunded');
  assert.equal(await latest.locator('[data-step="inventory"]').getAttribute('data-state'), 'failed');
  assert.equal(await latest.locator('[data-step="order"]').getAttribute('data-state'), 'failed');
  assert.match(await latest.locator('[data-outcome] [data-role="reason"]').textContent(), /out of stock/);
  await shot(page, 'storefront-cancelled');

  // My orders lists both, cancelled, straight from the server.
  await page.getByRole('link', { name: 'My orders' }).first().click();
  await page.waitForURL(/\/orders$/);
  for (const id of [declined.order_id, rejected.order_id]) {
    assert.equal(await page.locator(`[id="order-${id}"] [data-role="status"]`).textContent(), 'cancelled');
  }
  await shot(page, 'my-orders');
  assertClean([/402/]); // the declined card answers 402
  await context.close();
});

test('a malformed order shows the fields the API named (422)', { timeout: 60_000 }, async () => {
  const { page, context, assertClean } = await openPage(browser);
  await signIn(page, uniqueUser('typo'));
  const answer = await placeOrder(page, { qty: { 'SKU-2': 150 } });
  assert.equal(answer.http, 422);
  const result = page.locator('#order-result');
  assert.match(await result.textContent(), /not accepted/);
  assert.match(await result.textContent(), /Stoneware mug quantity: must be between 1 and 99/);
  assert.equal(await page.locator('#qty-SKU-2').getAttribute('aria-invalid'), 'true');
  assert.equal(await page.evaluate(() => document.activeElement?.id), 'qty-SKU-2', 'focus on the field to fix');
  await shot(page, 'storefront-422');
  assertClean([/422/]);
  await context.close();
});

test('the storefront works on a phone-sized screen', { timeout: 60_000 }, async () => {
  const { page, context, assertClean } = await openPage(browser, { viewport: { width: 390, height: 844 } });
  await signIn(page, uniqueUser('mobile'));
  const placed = await placeOrder(page);
  await waitForBadge(page, placed.order_id, 'confirmed');
  // Nothing wider than the screen.
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `page is ${overflow}px wider than the viewport`);
  await shot(page, 'storefront-mobile');
  assertClean();
  await context.close();
});
