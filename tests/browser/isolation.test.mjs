// Two users in two browser contexts: neither ever sees the other's orders,
// live or server-rendered, not even after a reconnect.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { BASE, launch, openPage, placeOrder, shot, signIn, uniqueUser, waitForBadge } from './helpers.mjs';

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

/** Every order id the page's DOM mentions anywhere (rows, log, timeline, links). */
const idsOnPage = (page) => page.evaluate(() => [...new Set(document.body.innerHTML.match(/ord_[0-9a-f]+/g) ?? [])]);

test('two users never see each other’s orders', { timeout: 120_000 }, async () => {
  const a = await openPage(browser);
  const b = await openPage(browser);
  const userA = uniqueUser('ann');
  const userB = uniqueUser('ben');
  await signIn(a.page, userA);
  await signIn(b.page, userB);

  // Interleaved orders from both users.
  const mine = { a: [], b: [] };
  for (let i = 0; i < 3; i++) {
    mine.a.push((await placeOrder(a.page, { qty: { 'SKU-1': i + 1 } })).order_id);
    mine.b.push((await placeOrder(b.page, { qty: { 'SKU-2': i + 1 } })).order_id);
  }
  for (const id of mine.a) await waitForBadge(a.page, id, 'confirmed');
  for (const id of mine.b) await waitForBadge(b.page, id, 'confirmed');

  const check = async (label) => {
    const seenA = await idsOnPage(a.page);
    const seenB = await idsOnPage(b.page);
    assert.deepEqual(seenA.filter((id) => mine.b.includes(id)), [], `${label}: ${userA} saw ${userB}'s orders`);
    assert.deepEqual(seenB.filter((id) => mine.a.includes(id)), [], `${label}: ${userB} saw ${userA}'s orders`);
    for (const id of mine.a) assert.ok(seenA.includes(id), `${label}: ${userA} misses own ${id}`);
    for (const id of mine.b) assert.ok(seenB.includes(id), `${label}: ${userB} misses own ${id}`);
  };
  await check('storefront');

  // My orders (server-rendered, then live) and after a fresh connection.
  for (const { page } of [a, b]) await page.goto('/orders');
  await a.page.waitForFunction(() => document.querySelector('#conn')?.dataset.state === 'live');
  await b.page.waitForFunction(() => document.querySelector('#conn')?.dataset.state === 'live');
  const extra = await (async () => {
    await a.page.goto('/');
    const o = await placeOrder(a.page);
    mine.a.push(o.order_id);
    await waitForBadge(a.page, o.order_id, 'confirmed');
    return o.order_id;
  })();
  await b.page.waitForTimeout(300); // would a stray event for ann arrive on ben's page?
  assert.equal(await b.page.locator(`[id="order-${extra}"]`).count(), 0);
  await a.page.goto('/orders');
  await check('my orders');
  await shot(b.page, 'my-orders-second-user');

  // The other user's timeline and fragments answer as if the order did not exist.
  const foreign = await b.page.goto(`/orders/${mine.a[0]}`);
  assert.equal(foreign.status(), 404);
  const fragment = await b.page.request.get(`${BASE}/fragments/orders/${mine.a[0]}`);
  assert.equal(fragment.status(), 404);
  assert.doesNotMatch(await (await b.page.request.get(`${BASE}/fragments/orders`)).text(), new RegExp(mine.a.join('|')));

  a.assertClean();
  b.assertClean([/404/]);
  await a.context.close();
  await b.context.close();
});
