// "My orders", live: the server renders the list (and htmx reloads it from
// /fragments/orders on `orderpush:refresh`); this script moves each order's
// badge as the client reports changes, adds new orders at once, and logs
// every status change in "Live updates".

import { client, dispatch, setBadge, clock, localizeTimes, eventsFor } from '/static/live.js';

const panel = document.querySelector('[data-orders-panel]');
const list = document.getElementById('orders-list');
const activity = document.getElementById('activity');
const rowTemplate = document.getElementById('order-row-template');
const limit = Number(new URL(list?.getAttribute('hx-get') ?? '/', location.href).searchParams.get('limit')) || 0;

const rowOf = (id) => document.getElementById(`order-${id}`);

// ---- the list ----------------------------------------------------------------

/** Move a row's badge forward to `order` (never backwards: versions only grow). */
function applyTo(row, order) {
  const version = Number(order.version ?? 0);
  const shown = Number(row.dataset.version || 0);
  // Versions only grow. At version 0 (a row made from the POST's answer, or the
  // view's status before the first order.* event) any different status is news.
  if (version < shown || (version === shown && (shown > 0 || row.dataset.status === String(order.status)))) return;
  row.dataset.version = String(version);
  row.dataset.status = String(order.status ?? '');
  setBadge(row.querySelector('[data-role="status"]'), order.status);
  row.classList.remove('order-row--changed');
  void row.offsetWidth; // restart the highlight
  row.classList.add('order-row--changed');
}

/** A row for an order the server's list does not have yet, built from what we know. */
function insertRow(order) {
  const body = list.querySelector('[data-orders-body]');
  if (!body || !rowTemplate) return null;
  const row = rowTemplate.content.firstElementChild.cloneNode(true);
  const id = order.order_id;
  const events = eventsFor(id);
  const items = events.map((ev) => ev.data?.items).find(Array.isArray) ?? [];
  const placedAt = events[0]?.occurred_at ?? order.updated_at ?? new Date().toISOString();
  row.id = `order-${id}`;
  row.dataset.orderId = id;
  row.dataset.version = '0';
  row.dataset.status = '';
  const link = row.querySelector('a');
  link.href = `/orders/${encodeURIComponent(id)}`;
  link.querySelector('code').textContent = id;
  row.querySelector('[data-role="items"]').textContent = items.map((i) => `${i.qty} × ${i.sku}`).join(', ');
  const time = row.querySelector('time');
  time.dateTime = placedAt;
  time.textContent = clock(placedAt);
  body.prepend(row);
  applyTo(row, order);
  list.querySelector('[data-orders-table]')?.removeAttribute('hidden');
  list.querySelector('[data-orders-empty]')?.remove();
  if (limit) for (const extra of [...body.children].slice(limit)) extra.remove();
  return row;
}

// Orders that must show up (placed here, or heard of live) until the server's
// list has them: the view behind GET /api/orders can trail the push by a moment.
const awaiting = new Map(); // order_id -> order we can show meanwhile, or null
let refreshTimer;
let retries = 0;

function refresh(delayMs = 50) {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => dispatch('orderpush:refresh'), delayMs);
}

function reconcile() {
  for (const [id, order] of client.orders()) {
    const row = rowOf(id);
    if (row) applyTo(row, order);
  }
  for (const [id, placeholder] of [...awaiting]) {
    if (rowOf(id)) {
      awaiting.delete(id);
      continue;
    }
    const order = client.order(id) ?? placeholder;
    if (order) insertRow(order);
  }
  if (awaiting.size && retries < 6) refresh(250 * 2 ** retries++);
  else if (!awaiting.size) retries = 0;
}

function expect(id, placeholder) {
  if (!awaiting.has(id) || placeholder) awaiting.set(id, placeholder);
  retries = 0;
  refresh();
}

// ---- "Live updates" ------------------------------------------------------------

const logged = new Map(); // order_id -> last version logged
let baseline = false;
let seq = 0;

function log(order, how) {
  const version = Number(order.version ?? 0);
  if (version <= (logged.get(order.order_id) ?? 0)) return;
  logged.set(order.order_id, version);
  const li = document.createElement('li');
  li.className = 'activity__item';
  li.dataset.orderId = order.order_id;
  li.dataset.version = String(version);
  li.dataset.status = String(order.status ?? '');
  li.dataset.seq = String(++seq);
  const time = document.createElement('time');
  time.dateTime = order.updated_at ?? '';
  time.textContent = clock(order.updated_at) || clock(new Date().toISOString());
  const link = document.createElement('a');
  link.href = `/orders/${encodeURIComponent(order.order_id)}`;
  const code = document.createElement('code');
  code.textContent = order.order_id;
  link.append(code);
  const badge = document.createElement('span');
  setBadge(badge, order.status);
  const note = document.createElement('span');
  note.className = 'activity__how';
  note.textContent = `v${version}${how === 'snapshot' ? ' · caught up' : ''}`;
  li.append(time, ' ', link, ' is now ', badge, ' ', note);
  activity.prepend(li);
  for (const old of [...activity.children].slice(50)) old.remove();
  panel.parentElement.querySelector('[data-activity-empty]')?.remove();
}

// A snapshot reports its orders in its own order: log what changed by time.
let batch = null;
function caughtUp(order) {
  if (!batch) {
    batch = [];
    queueMicrotask(() => {
      const changed = batch;
      batch = null;
      changed.sort((x, y) => String(x.updated_at ?? '').localeCompare(String(y.updated_at ?? '')));
      for (const o of changed) log(o, 'snapshot');
    });
  }
  batch.push(order);
}

// ---- wiring ----------------------------------------------------------------------

if (client && list && activity) {
  client.on('snapshot', (snap) => {
    if (!baseline) {
      // What the page was rendered with is not news: log only what changes after.
      for (const order of snap.orders) logged.set(order.order_id, Number(order.version ?? 0));
      baseline = true;
    }
    refresh(0);
  });

  client.on('order', ({ order_id: id, order, event }) => {
    if (!order) return; // the client forgot it (another user signed in)
    let row = rowOf(id);
    if (!row && event) {
      row = insertRow(order);
      expect(id, null);
    }
    if (row) applyTo(row, order);
    if (event) log(order, 'event');
    else caughtUp(order);
  });

  // The order form (shop.js) says an order was placed: show it even before its first event.
  document.body.addEventListener('orderpush:placed', (e) => {
    const { order_id: id, status } = e.detail ?? {};
    if (!id) return;
    const placeholder = status ? { order_id: id, status, version: 0 } : null;
    if (!rowOf(id) && placeholder) insertRow(client.order(id) ?? placeholder);
    expect(id, placeholder);
  });

  document.body.addEventListener('htmx:afterSwap', (e) => {
    if (e.detail?.target === list) {
      localizeTimes(list);
      reconcile();
    }
  });
}
