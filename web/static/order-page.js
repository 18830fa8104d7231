// An order's timeline page: server-rendered, then lit up by the client's
// events for this order; reloaded through htmx after a reconnect.

import { client, eventsFor, announce } from '/static/live.js';
import { SagaView, sagaRules } from '/static/timeline.js';

const box = document.getElementById('timeline');
const orderId = box?.dataset.orderId;
let view = box ? new SagaView(box) : null;

function show(ev) {
  if (!view.apply(ev)) return;
  const rule = sagaRules().rules[ev.type];
  announce(rule ? `${rule.step}: ${rule.label}` : ev.type);
}

if (client && view) {
  for (const ev of eventsFor(orderId)) view.apply(ev);
  client.on('event', (ev) => ev.order_id === orderId && show(ev));

  // A snapshot (after a reconnect, or when history was gone) carries statuses
  // only: ask the server for the whole timeline again.
  let first = true;
  client.on('snapshot', () => {
    const known = client.order(orderId);
    const shown = Number(box.querySelector('[data-outcome]')?.dataset.version || 0);
    if (!first || (known && Number(known.version) > shown)) {
      document.body.dispatchEvent(new CustomEvent('orderpush:refresh-timeline'));
    }
    first = false;
  });

  document.body.addEventListener('htmx:afterSwap', (e) => {
    if (e.detail?.target !== box) return;
    view = new SagaView(box);
    for (const ev of eventsFor(orderId)) view.apply(ev); // what the server's view may not have yet
  });
}
