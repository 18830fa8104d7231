// Cut the page's WebSocket while orders progress, refuse reconnects for a
// while, then let it back in: the page must catch up, showing every update
// exactly once and in order, and say so in the connection indicator.
//
// Playwright's routeWebSocket sits between the page and the server: it
// forwards frames, can cut both sides at an exact frame, and refuses new
// sockets while the test wants the page offline.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  DECLINED_CARD,
  activityOf,
  apiOrders,
  eventually,
  launch,
  openPage,
  placeOrder,
  recordIndicator,
  shot,
  signIn,
  uniqueUser,
  waitForBadge,
  waitForIndicator,
} from './helpers.mjs';

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

/** A switchable link between the page and /ws. */
async function interpose(page) {
  const state = { refusing: false, cutAfter: null, links: new Set(), refused: 0, frames: [] };
  const cut = () => {
    state.refusing = true;
    for (const link of state.links) {
      link.dead = true;
      link.page.close({ code: 1001, reason: 'test: cut' }).catch(() => {});
      link.server.close({ code: 1001, reason: 'test: cut' }).catch(() => {});
    }
    state.links.clear();
  };
  await page.routeWebSocket((url) => url.pathname === '/ws', (ws) => {
    if (state.refusing) {
      state.refused++;
      ws.close({ code: 1013, reason: 'test: try again later' }).catch(() => {});
      return;
    }
    const server = ws.connectToServer();
    const link = { page: ws, server, dead: false };
    state.links.add(link);
    server.onMessage((message) => {
      if (link.dead) return; // after the cut nothing more reaches the page
      ws.send(message);
      const frame = JSON.parse(String(message));
      state.frames.push(frame);
      if (state.cutAfter?.(frame)) {
        state.cutAfter = null;
        cut();
      }
    });
  });
  return {
    state,
    cut,
    /** Cut right after forwarding the first frame for which `predicate` is true. */
    cutAfter(predicate) { state.cutAfter = predicate; },
    allow() { state.refusing = false; },
  };
}

const FINAL = new Set(['confirmed', 'cancelled']);

test('after a cut, the page resumes and shows every update exactly once, in order', { timeout: 120_000 }, async () => {
  const { page, context, assertClean } = await openPage(browser);
  const link = await interpose(page);
  await signIn(page, uniqueUser('flaky'));
  await recordIndicator(page);

  // Before the cut: one order, seen live.
  const first = await placeOrder(page);
  await waitForBadge(page, first.order_id, 'confirmed');

  // The cut lands between this order's `pending` and its `confirmed`.
  link.cutAfter((f) => f.type === 'event' && f.event?.type === 'order.pending');
  const split = await placeOrder(page, { qty: { 'SKU-2': 1 } });
  await waitForIndicator(page, /^Reconnecting \(attempt \d+\)…$/);
  assert.equal(link.state.links.size, 0);

  // While the page is offline: three more orders, one of each outcome.
  const offline = [
    await placeOrder(page, { qty: { 'SKU-3': 2 } }),
    await placeOrder(page, { card: DECLINED_CARD }),
    await placeOrder(page, { outOfStock: true }),
  ];
  assert.deepEqual(offline.map((o) => o.http), [202, 402, 202]);
  const ids = [first, split, ...offline].map((o) => o.order_id);
  // Let the saga finish on the server, and the page knock on the door a few times.
  const finals = await eventually(async () => {
    const orders = await apiOrders(page);
    const byId = new Map(orders.map((o) => [o.order_id, o]));
    return ids.every((id) => FINAL.has(byId.get(id)?.status) && byId.get(id).version > 0) && byId;
  }, { what: 'every order to reach a final status on the server' });
  await eventually(() => link.state.refused >= 2, { timeout: 20_000, what: 'two refused reconnects' });

  link.allow();
  await waitForIndicator(page, /^Resumed \(\d+ replayed\)$/, 40_000);
  for (const id of ids) await waitForBadge(page, id, finals.get(id).status);

  // Each order is listed once, with its final status.
  for (const id of ids) {
    assert.equal(await page.locator(`[id="order-${id}"]`).count(), 1, `${id} listed once`);
  }
  assert.equal(await page.locator('#orders-list [data-order-id]').count(), ids.length);

  // "Live updates": for every order, every status it went through, once each and
  // in order: those before the cut live, those during it replayed on resume.
  const expected = {
    [first.order_id]: ['pending', 'confirmed'], // all live
    [split.order_id]: ['pending', 'confirmed'], // pending live, confirmed replayed
    [offline[0].order_id]: ['pending', 'confirmed'], // all replayed
    [offline[1].order_id]: ['cancelled'], // declined: cancelled at v1
    [offline[2].order_id]: ['pending', 'cancelled'], // rejected by inventory
  };
  const report = {};
  for (const id of ids) {
    const seen = await activityOf(page, id);
    report[id] = seen.map((s) => `v${s.version} ${s.status}`).join(', ');
    assert.deepEqual(seen, expected[id].map((status, i) => ({ version: i + 1, status })), `${id}: ${report[id]}`);
    assert.deepEqual(seen.at(-1), { version: finals.get(id).version, status: finals.get(id).status }, id);
  }

  // The indicator said so: live, reconnecting, then resumed.
  const shown = await page.evaluate(() => window.__indicator);
  const lost = shown.findIndex((t) => /^Reconnecting \(attempt \d+\)…$/.test(t));
  const back = shown.findIndex((t) => /^Resumed \(\d+ replayed\)$/.test(t));
  assert.ok(lost >= 0 && back > lost, `indicator showed: ${shown.join(' → ')}`);
  const replayed = Number(/\((\d+) replayed\)/.exec(shown[back])[1]);
  assert.ok(replayed > 0, 'the resume replayed what was missed');

  // The latest order's timeline caught up too.
  await page.waitForFunction(() => document.querySelector('#latest [data-step="payment"]')?.dataset.state === 'refunded');

  console.log(`indicator: ${shown.join(' → ')}`);
  console.log(`refused reconnects: ${link.state.refused}; updates shown per order:`);
  for (const id of ids) console.log(`  ${id}: ${report[id]}`);
  await shot(page, 'storefront-after-resume');
  assertClean([/402/, /WebSocket/]);
  await context.close();
});
