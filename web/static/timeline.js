// An order's saga (payment, order, inventory, billing, delivery) lighting up as
// events arrive. The markup comes from the server (_saga.html) and so do the
// rules (web/saga.py, rendered as JSON into #saga-rules): one source of truth.

import { clock, setBadge } from '/static/live.js';

let rulesCache;

/** The rules table rendered by the server: `{rules: {type: {step, state, label}}, rank, stateText}`. */
export function sagaRules() {
  if (!rulesCache) {
    const el = document.getElementById('saga-rules');
    rulesCache = el ? JSON.parse(el.textContent) : { rules: {}, rank: {}, stateText: {} };
  }
  return rulesCache;
}

const SYMBOLS = { EUR: '€', USD: '$', GBP: '£' };
const humanize = (code) => String(code).replaceAll('_', ' ');

/** `{start, end}` -> `28 Nov, 08:00–10:00` in local time; a string as it is. */
function slotText(slot) {
  if (typeof slot === 'string') return slot;
  const start = new Date(slot?.start);
  if (!slot || Number.isNaN(start.getTime())) return '';
  const hm = (d) => d.toLocaleTimeString('en-GB', { hour: '2-digit', minute: '2-digit' });
  const end = new Date(slot.end);
  const day = start.toLocaleDateString('en-GB', { day: 'numeric', month: 'short' });
  return `${day}, ${hm(start)}${Number.isNaN(end.getTime()) ? '' : `–${hm(end)}`}`;
}

/** The interesting part of an event's data in a few words (mirrors web/formatting.py). */
export function describe(ev) {
  const d = ev?.data;
  if (!d || typeof d !== 'object') return '';
  const parts = [];
  if (d.reason) parts.push(humanize(d.reason));
  if (d.sku) parts.push(`SKU ${d.sku}`);
  if (Number.isInteger(d.amount_cents)) {
    const amount = (d.amount_cents / 100).toLocaleString('en', { minimumFractionDigits: 2, maximumFractionDigits: 2 });
    const currency = d.currency ?? 'EUR';
    parts.push(SYMBOLS[currency] ? `${SYMBOLS[currency]}${amount}` : `${amount} ${currency}`);
  }
  if (d.card_last4) parts.push(`card •••• ${d.card_last4}`);
  if (d.invoice_number) parts.push(`invoice ${d.invoice_number}`);
  const slot = slotText(d.slot ?? d.delivery_slot);
  if (slot) parts.push(`slot ${slot}`);
  return parts.join(' · ');
}

/** One timeline (the children of `root`: an outcome line and the saga list). */
export class SagaView {
  constructor(root) {
    this.root = root;
    this.spec = sagaRules();
  }

  has(eventId) {
    return this.root.querySelector(`[data-event-id="${CSS.escape(eventId)}"]`) !== null;
  }

  /** Show one event; returns false if it was already shown. */
  apply(ev) {
    if (!ev || !ev.type) return false;
    const id = ev.event_id ?? `${ev.type}@${ev.occurred_at}`;
    if (this.has(id)) return false;
    const rule = this.spec.rules[ev.type];
    const entry = this.#entry(id, ev, rule ? rule.label : ev.type);
    if (rule) {
      const step = this.root.querySelector(`[data-step="${rule.step}"]`);
      if (step) {
        step.querySelector('[data-entries]').append(entry);
        const rank = this.spec.rank;
        if ((rank[rule.state] ?? 0) >= (rank[step.dataset.state] ?? 0)) {
          step.dataset.state = rule.state;
          step.querySelector('[data-role="label"]').textContent = rule.label;
        }
        step.classList.remove('step--lit');
        void step.offsetWidth; // restart the highlight animation
        step.classList.add('step--lit');
      }
    } else {
      const other = this.root.querySelector('[data-other]');
      if (other) {
        other.querySelector('[data-other-list]').append(entry);
        other.hidden = false;
      }
    }
    if (String(ev.type).startsWith('order.')) this.#outcome(ev);
    return true;
  }

  #entry(id, ev, label) {
    const li = document.createElement('li');
    li.className = 'entry entry--new';
    li.dataset.eventId = id;
    li.dataset.type = ev.type;
    const name = document.createElement('span');
    name.className = 'entry__label';
    name.textContent = label;
    const time = document.createElement('time');
    time.dateTime = ev.occurred_at ?? '';
    time.dataset.local = '';
    time.textContent = clock(ev.occurred_at);
    li.append(name, ' ', time);
    const detail = describe(ev);
    if (detail) {
      const span = document.createElement('span');
      span.className = 'entry__detail';
      span.textContent = detail;
      li.append(' ', span);
    }
    return li;
  }

  #outcome(ev) {
    const el = this.root.querySelector('[data-outcome]');
    if (!el || typeof ev.version !== 'number') return;
    if (ev.version <= Number(el.dataset.version || 0)) return;
    const status = ev.status ?? ev.type.slice('order.'.length);
    el.dataset.version = String(ev.version);
    el.dataset.status = status;
    el.className = `outcome outcome--${['pending', 'confirmed', 'cancelled'].includes(status) ? status : 'other'}`;
    setBadge(el.querySelector('[data-role="status"]'), status);
    el.querySelector('[data-role="reason"]').textContent = ev.data?.reason ? humanize(ev.data.reason) : '';
    if (status === 'cancelled') {
      for (const step of this.root.querySelectorAll('[data-step][data-state="waiting"]')) {
        step.dataset.state = 'skipped';
        step.querySelector('[data-role="label"]').textContent = this.spec.stateText.skipped ?? 'Not reached';
      }
    }
  }
}
