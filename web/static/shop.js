// The order form: POST /api/orders (same origin, bearer token), the answer
// shown in words (202 pending / 402 declined / 422 field errors), and the
// order just placed followed live in "Your latest order".

import { client, currentToken, dispatch, eventsFor, announce } from '/static/live.js';
import { SagaView } from '/static/timeline.js';

const form = document.getElementById('order-form');
const result = document.getElementById('order-result');
const latest = document.getElementById('latest');
const submit = form?.querySelector('[data-role="submit"]');

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** A fresh Idempotency-Key (crypto.randomUUID needs a secure context; this does not). */
function newKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

// ---- "Your latest order" -----------------------------------------------------

let following = null; // { id, box, view, off }

function follow(orderId) {
  following?.off();
  const box = document.getElementById('latest-timeline');
  box.replaceChildren(document.getElementById('saga-skeleton').content.cloneNode(true));
  latest.hidden = false;
  latest.dataset.orderId = orderId;
  latest.querySelector('[data-role="order-id"]').textContent = orderId;
  latest.querySelector('[data-role="follow"]').href = `/orders/${encodeURIComponent(orderId)}`;
  const view = new SagaView(box);
  for (const ev of eventsFor(orderId)) view.apply(ev); // what arrived before the POST answered
  const off = client.on('event', (ev) => ev.order_id === orderId && view.apply(ev));
  following = { id: orderId, box, view, off };
}

/** After a reconnect: the server's timeline, plus whatever the page has seen since. */
async function reloadFollowed() {
  if (!following || !window.htmx) return;
  const { id, box } = following;
  try {
    await window.htmx.ajax('GET', `/fragments/orders/${encodeURIComponent(id)}`, { target: box, swap: 'innerHTML' });
  } catch {
    return; // keep what is shown
  }
  if (following?.id !== id) return;
  following.view = new SagaView(box);
  for (const ev of eventsFor(id)) following.view.apply(ev);
}

if (client && latest) {
  let first = true;
  client.on('snapshot', () => {
    if (!first) reloadFollowed();
    first = false;
  });
}

// ---- the form ------------------------------------------------------------------

function clearErrors() {
  for (const el of form.querySelectorAll('[aria-invalid]')) {
    el.removeAttribute('aria-invalid');
    el.removeAttribute('aria-describedby');
  }
  for (const el of form.querySelectorAll('fieldset.has-error')) el.classList.remove('has-error');
}

function say(kind, ...nodes) {
  result.className = `result result--${kind}`;
  result.replaceChildren(...nodes);
}

function text(tag, content, className) {
  const el = document.createElement(tag);
  el.textContent = content;
  if (className) el.className = className;
  return el;
}

function orderLink(id) {
  const a = document.createElement('a');
  a.href = `/orders/${encodeURIComponent(id)}`;
  a.append(text('code', id));
  return a;
}

/** 422: name each bad field in words and mark its input. */
function showFieldErrors(fields, sent) {
  const listEl = document.createElement('ul');
  for (const [field, why] of Object.entries(fields ?? {})) {
    let name = field;
    let input = null;
    const m = /^items\[(\d+)\](?:\.(\w+))?$/.exec(field);
    if (m) {
      const item = sent[Number(m[1])];
      input = item?.input ?? null;
      name = `${item?.label ?? `Item ${Number(m[1]) + 1}`}${m[2] === 'qty' ? ' quantity' : m[2] ? ` ${m[2]}` : ''}`;
    } else if (field === 'items') {
      name = 'Items';
      form.querySelector('fieldset')?.classList.add('has-error');
    } else if (field.startsWith('payment')) {
      name = 'Card';
      form.querySelectorAll('fieldset')[1]?.classList.add('has-error');
    }
    input?.setAttribute('aria-invalid', 'true');
    input?.setAttribute('aria-describedby', 'order-result');
    listEl.append(text('li', `${name}: ${why}`));
  }
  say('error', text('p', 'The order was not accepted. Please fix:', 'result__title'), listEl);
  form.querySelector('[aria-invalid="true"]')?.focus(); // straight to the first field to fix
}

async function post(body, key) {
  const init = {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      accept: 'application/json',
      authorization: `Bearer ${await currentToken()}`,
      'idempotency-key': key,
    },
    body: JSON.stringify(body),
  };
  // Network trouble or a busy bus: retry with the same key (never a second order).
  for (let attempt = 0; ; attempt++) {
    try {
      const res = await fetch('/api/orders', init);
      if ((res.status === 502 || res.status === 503) && attempt < 2) {
        await sleep(400 * (attempt + 1));
        continue;
      }
      return res;
    } catch (err) {
      if (attempt >= 2) throw err;
      await sleep(400 * (attempt + 1));
    }
  }
}

async function placeOrder(event) {
  event.preventDefault();
  clearErrors();
  const sent = [];
  for (const input of form.querySelectorAll('input.qty')) {
    if (input.value.trim() === '' || Number(input.value) === 0) continue;
    const label = form.querySelector(`label[for="${input.id}"] .product__name`)?.textContent ?? input.dataset.sku;
    sent.push({ sku: input.dataset.sku, qty: Number(input.value), input, label });
  }
  const oos = form.elements.out_of_stock;
  if (oos?.checked) sent.push({ sku: oos.value, qty: 1, input: oos, label: oos.value });
  const card = form.elements.card.value;
  const body = { items: sent.map(({ sku, qty }) => ({ sku, qty })), payment: { card } };

  submit.disabled = true;
  form.setAttribute('aria-busy', 'true');
  say('busy', text('p', 'Placing your order…'));
  let res;
  let answer = {};
  try {
    res = await post(body, newKey());
    answer = await res.json().catch(() => ({}));
  } catch {
    say('error', text('p', 'The shop could not be reached. Check your connection and try again.'));
    return;
  } finally {
    submit.disabled = false;
    form.removeAttribute('aria-busy');
  }

  const id = answer.order_id;
  switch (res.status) {
    case 202:
      say('ok', text('p', 'Order placed. ', 'result__title'), orderLink(id), text('span', ': payment authorized; follow it under "Your latest order".'));
      break;
    case 402:
      say('declined', text('p', 'Payment declined. ', 'result__title'), orderLink(id), text('span', ': the card was refused and nothing was charged; the order is cancelled.'));
      break;
    case 422:
      showFieldErrors(answer.fields, sent);
      return;
    case 401:
      say('error', text('p', 'Your session has expired. '), Object.assign(document.createElement('a'), { href: '/', textContent: 'Sign in again' }));
      return;
    default:
      say('error', text('p', `The shop could not take the order (HTTP ${res.status}${answer.error ? `: ${answer.error}` : ''}). Please try again.`));
      return;
  }
  if (id) {
    follow(id);
    dispatch('orderpush:placed', { order_id: id, status: res.status === 202 ? answer.status ?? 'pending' : null });
    announce(res.status === 202 ? `Order ${id} placed, pending.` : `Payment declined for order ${id}.`);
  }
}

form?.addEventListener('submit', placeOrder);
