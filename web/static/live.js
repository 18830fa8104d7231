// The page's one connection to /ws (the Orderpush JS client), the connection
// indicator in the header, and small helpers the page scripts share.
//
// Every page loads this module; pages that show orders import `client` from it
// (ES modules are evaluated once per page, so there is one client per page).

import { connect, decodeJwt } from '/static/orderpush.js';

const meta = (name) => document.querySelector(`meta[name="${name}"]`)?.content || undefined;

/** The signed-in user's token, rendered by the server (the cookie is HttpOnly). */
export const token = meta('orderpush-token');
let current = token; // moved along by refreshToken()

/**
 * A fresh token from the page's own route (POST /session/refresh), which also
 * moves the HttpOnly cookie along for htmx requests. The client calls it
 * shortly before the current token expires and sends the result on its open
 * socket, so the page stays live past the first token's lifetime.
 */
async function refreshToken() {
  const res = await fetch('/session/refresh', {
    method: 'POST',
    credentials: 'same-origin',
    cache: 'no-store',
    headers: { accept: 'application/json' },
  });
  if (!res.ok) throw new Error(`token refresh answered ${res.status}`);
  current = (await res.json()).token;
  return current;
}

/** The freshest token for API calls (refreshed first when it is about to expire). */
export async function currentToken() {
  const { exp } = decodeJwt(current ?? '');
  if (typeof exp === 'number' && exp * 1000 - Date.now() < 5000) return refreshToken();
  return current;
}

/** The live client, or null when nobody is signed in. */
export const client = token ? connect({ token, getToken: refreshToken }) : null;

// ---- shared helpers ---------------------------------------------------------

/** `2026-11-27T15:46:00.123Z` -> `15:46:00.123` in the browser's time zone. */
export function clock(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '';
  const pad = (n, w = 2) => String(n).padStart(w, '0');
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

/** Show every `<time data-local datetime=...>` under `root` in local time. */
export function localizeTimes(root = document) {
  for (const el of root.querySelectorAll('time[data-local][datetime]')) {
    const text = clock(el.getAttribute('datetime'));
    if (text) {
      el.textContent = text;
      el.title = new Date(el.getAttribute('datetime')).toString();
    }
  }
}

/** Say something to screen readers (polite). */
export function announce(text) {
  const el = document.getElementById('announcer');
  if (!el) return;
  el.textContent = '';
  // a separate task, so that the same text twice is announced twice
  setTimeout(() => { el.textContent = text; }, 30);
}

/** Dispatch a DOM event on <body> (htmx listens there: `hx-trigger="name from:body"`). */
export function dispatch(name, detail) {
  document.body.dispatchEvent(new CustomEvent(name, { detail }));
}

const KNOWN = new Set(['pending', 'confirmed', 'cancelled']);

/** Put `status` on a badge element; unknown statuses are shown as they are. */
export function setBadge(el, status) {
  const text = status == null || status === '' ? 'unknown' : String(status);
  el.textContent = text;
  el.className = `badge badge--${KNOWN.has(text) ? text : 'other'}`;
}

// ---- every event of this page's life, by order ------------------------------
// An order's first events can arrive before the POST that created it has
// answered, so page scripts look back here when they start following an order.

const MAX_ORDERS = 200;
const byOrder = new Map();

/** Events seen since the page loaded for `orderId`, in arrival order. */
export function eventsFor(orderId) {
  return byOrder.get(orderId) ?? [];
}

if (client) {
  client.on('event', (ev) => {
    if (ev?.order_id == null) return;
    let list = byOrder.get(ev.order_id);
    if (!list) {
      byOrder.set(ev.order_id, (list = []));
      if (byOrder.size > MAX_ORDERS) byOrder.delete(byOrder.keys().next().value);
    }
    list.push(ev);
  });
}

// ---- the connection indicator -----------------------------------------------

const indicator = document.getElementById('conn');

function show(state, label, title = '') {
  if (!indicator) return;
  indicator.dataset.state = state;
  indicator.querySelector('[data-role="label"]').textContent = label;
  indicator.title = title;
}

if (client) {
  client.on('state', (s) => {
    switch (s.state) {
      case 'connecting':
        if (s.attempt > 0) show('reconnecting', `Reconnecting (attempt ${s.attempt})…`);
        else show('connecting', 'Connecting…');
        break;
      case 'open':
        show('live', 'Live', 'Connected: updates arrive as they happen');
        break;
      case 'reconnecting': {
        const secs = s.delayMs > 0 ? ` in ${(s.delayMs / 1000).toFixed(1)} s` : '';
        show('reconnecting', `Reconnecting (attempt ${s.attempt})…`, `Connection lost; next try${secs}`);
        break;
      }
      case 'closed':
        show('closed', 'Closed', 'Not receiving updates');
        break;
    }
  });
  client.on('resumed', (r) => {
    const n = Number(r?.replayed ?? 0);
    show('resumed', `Resumed (${n} replayed)`, `Reconnected; caught up on ${n} missed update${n === 1 ? '' : 's'}`);
  });
  client.on('error', (err) => {
    if (!err?.fatal) return;
    const why = err.code === 4001 ? 'session expired, sign in again' : err.message;
    show('closed', `Closed: ${why}`, String(err.message ?? ''));
  });
  // Back online: try now rather than at the end of the backoff.
  window.addEventListener('online', () => client.reconnect());
}

// ---- times, now and after every htmx swap ------------------------------------

localizeTimes();
document.addEventListener('htmx:afterSwap', (e) => localizeTimes(e.target));
