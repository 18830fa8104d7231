// Shared helpers for the browser tests: headless Debian chromium driven by
// playwright-core, against the server at ORDERPUSH_URL (tests/test_browser.py
// starts the demo app under uvicorn and runs these with `node --test`).

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const BASE = (process.env.ORDERPUSH_URL ?? 'http://127.0.0.1:8000').replace(/\/$/, '');
/** The admin listener (/metrics, /api/stats, /operator): not on the public port. */
export const ADMIN = (process.env.ORDERPUSH_ADMIN_URL ?? 'http://127.0.0.1:9000').replace(/\/$/, '');
export const GOOD_CARD = '4242424242424242';
export const DECLINED_CARD = '4000000000000002';
export const ARTIFACTS = fileURLToPath(new URL('../../artifacts/', import.meta.url));
export const SHOTS = `${ARTIFACTS}screenshots/`;
mkdirSync(SHOTS, { recursive: true });

/** Every wait in these tests is bounded by this (ms) unless it says otherwise. */
export const WAIT_MS = 15_000;

export async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    timeout: 30_000,
    args: [
      '--no-sandbox',
      '--disable-background-networking',
      '--disable-gpu',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
    ],
  });
}

/** A user name no other test (or earlier run) has used: each test sees only its own orders. */
export function uniqueUser(prefix) {
  return `${prefix}-${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;
}

/**
 * A fresh context and page. Console errors and page errors (CSP violations
 * among them) are collected in `problems`; `assertClean()` fails on any.
 */
export async function openPage(browser, { viewport = { width: 1280, height: 900 } } = {}) {
  const context = await browser.newContext({ viewport, baseURL: BASE });
  context.setDefaultTimeout(WAIT_MS);
  const page = await context.newPage();
  const problems = [];
  page.on('console', (msg) => {
    if (msg.type() === 'error') problems.push(`console: ${msg.text()}`);
  });
  page.on('pageerror', (err) => problems.push(`pageerror: ${err.message}`));
  return {
    context,
    page,
    problems,
    assertClean(allow = []) {
      const left = problems.filter((p) => !allow.some((re) => re.test(p)));
      assert.deepEqual(left, [], `the page reported errors:\n${left.join('\n')}`);
    },
  };
}

export async function shot(page, name) {
  await page.screenshot({ path: `${SHOTS}${name}.png`, fullPage: true, animations: 'disabled' });
}

/** Sign in through the dev form by typing a name; lands back on the storefront. */
export async function signIn(page, user) {
  await page.goto('/');
  await page.getByLabel('Or type a user name').fill(user);
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  await page.waitForURL(`${BASE}/`);
  assert.equal(await page.locator('[data-user]').textContent(), user);
  await waitForIndicator(page, /^Live$/);
}

/** Wait until the connection indicator's label matches `re`. */
export async function waitForIndicator(page, re, timeout = WAIT_MS) {
  await page.waitForFunction(
    ([source, flags]) => new RegExp(source, flags).test(document.querySelector('#conn [data-role="label"]')?.textContent ?? ''),
    [re.source, re.flags],
    { timeout },
  );
}

/**
 * Fill the order form and submit it; returns the POST's body plus `http`, its status code.
 * `qty` maps SKUs to quantities (others are set to 0).
 */
export async function placeOrder(page, { card = GOOD_CARD, outOfStock = false, qty = { 'SKU-1': 1 } } = {}) {
  for (const input of await page.locator('input.qty').all()) {
    const sku = await input.getAttribute('data-sku');
    await input.fill(String(qty[sku] ?? 0));
  }
  await page.locator(`input[name="card"][value="${card}"]`).check();
  await page.getByLabel(/OUT-OF-STOCK/).setChecked(outOfStock);
  const [response] = await Promise.all([
    page.waitForResponse((r) => new URL(r.url()).pathname === '/api/orders' && r.request().method() === 'POST'),
    page.getByRole('button', { name: 'Place order' }).click(),
  ]);
  const body = await response.json().catch(() => ({}));
  return { ...body, http: response.status() };
}

/** Wait until the order's row in "My orders" shows `status`. */
export async function waitForBadge(page, orderId, status, timeout = WAIT_MS) {
  await page.waitForFunction(
    ([id, want]) => document.querySelector(`[id="order-${id}"] [data-role="status"]`)?.textContent === want,
    [orderId, status],
    { timeout },
  );
}

/** The "Live updates" entries of one order, oldest first: [{version, status}]. */
export async function activityOf(page, orderId) {
  return page.evaluate((id) => [...document.querySelectorAll('#activity [data-order-id]')]
    .filter((li) => li.dataset.orderId === id)
    .sort((a, b) => Number(a.dataset.seq) - Number(b.dataset.seq))
    .map((li) => ({ version: Number(li.dataset.version), status: li.dataset.status })), orderId);
}

/** The storefront API as this page's user (token from the page's meta). */
export async function apiOrders(page) {
  const token = await page.locator('meta[name="orderpush-token"]').getAttribute('content');
  const res = await page.request.get('/api/orders', { headers: { authorization: `Bearer ${token}` } });
  assert.equal(res.status(), 200);
  return (await res.json()).orders;
}

/** Poll `fn` until it returns a truthy value, at most `timeout` ms. */
export async function eventually(fn, { timeout = WAIT_MS, intervalMs = 100, what = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    last = await fn();
    if (last) return last;
    if (Date.now() > deadline) assert.fail(`timed out after ${timeout} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

/** Record every text the connection indicator shows, from now on, in window.__indicator. */
export async function recordIndicator(page) {
  await page.evaluate(() => {
    const label = document.querySelector('#conn [data-role="label"]');
    window.__indicator = [label.textContent];
    new MutationObserver(() => {
      const text = label.textContent;
      if (window.__indicator.at(-1) !== text) window.__indicator.push(text);
    }).observe(label, { childList: true, characterData: true, subtree: true });
  });
}

export const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

export const quantile = (xs, q) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)];
};
