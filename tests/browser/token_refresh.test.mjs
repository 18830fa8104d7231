// Tokens that expire within the test (the server's dev tokens live 8 s): the
// page must refresh its token through POST /session/refresh before it
// expires and send it on the open socket, so it stays live on one socket,
// past the first token's expiry, and orders still show up live.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  eventually,
  launch,
  openPage,
  placeOrder,
  recordIndicator,
  signIn,
  uniqueUser,
  waitForBadge,
} from './helpers.mjs';

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

const claims = (jwt) => JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString());

test('the page stays live past its first token\'s expiry', { timeout: 90_000 }, async () => {
  const { page, assertClean } = await openPage(browser);
  const sockets = [];
  const authSent = [];
  const closes = [];
  page.on('websocket', (ws) => {
    if (new URL(ws.url()).pathname !== '/ws') return;
    sockets.push(ws);
    ws.on('framesent', ({ payload }) => {
      const message = JSON.parse(String(payload));
      if (message.type === 'auth') authSent.push(claims(message.token));
    });
    ws.on('close', () => closes.push(Date.now()));
  });
  const refreshes = [];
  page.on('response', (r) => {
    if (new URL(r.url()).pathname === '/session/refresh') refreshes.push(r.status());
  });

  const user = uniqueUser('refresh');
  await signIn(page, user);
  await recordIndicator(page);
  const first = claims(await page.locator('meta[name="orderpush-token"]').getAttribute('content'));
  assert.equal(first.sub, user);
  assert.ok(first.exp - first.iat <= 8, `short-lived token expected, got ${first.exp - first.iat} s`);

  // Wait until well past the first token's expiry (exp is in whole seconds).
  const pastExpiryMs = first.exp * 1000 + 4000 - Date.now();
  await new Promise((resolve) => setTimeout(resolve, Math.max(0, pastExpiryMs)));

  assert.equal(sockets.length, 1, 'one socket for the whole time: no reconnect');
  assert.equal(closes.length, 0, 'the socket was never closed (no 4001 at expiry)');
  assert.ok(sockets[0] && !sockets[0].isClosed());
  const later = authSent.filter((c) => c.exp > first.exp);
  assert.ok(later.length >= 1, `a fresher token was sent on the socket: ${JSON.stringify(authSent)}`);
  assert.ok(later.every((c) => c.sub === user));
  assert.ok(refreshes.length >= 1 && refreshes.every((s) => s === 200), `refreshes: ${refreshes}`);
  const indicator = await page.evaluate(() => window.__indicator);
  assert.ok(indicator.every((text) => text === 'Live'), `indicator: ${indicator}`);

  // Still live: an order placed now shows up confirmed without a reload, and
  // the cookie moved along (the API call and the htmx fragments use it).
  const placed = await placeOrder(page);
  assert.equal(placed.http, 202, JSON.stringify(placed));
  await waitForBadge(page, placed.order_id, 'confirmed');
  await eventually(async () => (await page.locator('#conn [data-role="label"]').textContent()) === 'Live', { what: 'Live' });
  assertClean();
});
