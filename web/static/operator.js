// The operator page: polls GET /api/stats, computes rates from successive
// samples, draws the push-latency distribution and an events/s sparkline.

import { announce } from '/static/live.js';

const POLL_MS = 1000;
const HISTORY = 120; // samples kept for the sparkline
const SVG = 'http://www.w3.org/2000/svg';

const status = document.getElementById('stats-status');
const bars = document.getElementById('latency-chart');
const spark = document.getElementById('rate-chart');
const rates = [];
let previous = null;

const fmt = new Intl.NumberFormat('en');
const ms = (v) => (v == null ? '—' : v < 10 ? `${v.toFixed(2)} ms` : `${v.toFixed(0)} ms`);
const rate = (v) => (v == null ? '—' : v < 10 ? v.toFixed(1) : fmt.format(Math.round(v)));

function uptime(s) {
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return h ? `${h} h ${m} min` : m ? `${m} min ${Math.floor(s % 60)} s` : `${Math.floor(s)} s`;
}

function put(name, value) {
  for (const el of document.querySelectorAll(`[data-stat="${name}"]`)) el.textContent = value;
}

function el(name, attrs, text) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text != null) node.textContent = text;
  return node;
}

/** Cumulative buckets [{le_ms, count}] -> bars of the count in each band. */
function drawBars(buckets) {
  const bands = buckets.map((b, i) => ({ le: b.le_ms, n: b.count - (i ? buckets[i - 1].count : 0) }));
  const max = Math.max(1, ...bands.map((b) => b.n));
  const total = buckets.length ? buckets[buckets.length - 1].count : 0;
  const w = 480, h = 200, top = 16, bottom = 36, left = 8;
  const slot = (w - left * 2) / Math.max(1, bands.length);
  const title = el('title', { id: 'latency-chart-title' },
    `Push latency distribution over ${total} recent frames: ` +
    bands.map((b) => `${b.n} at or under ${b.le} ms`).join(', '));
  const nodes = [title, el('line', { x1: left, x2: w - left, y1: h - bottom, y2: h - bottom, class: 'bars__axis' })];
  bands.forEach((b, i) => {
    const bh = ((h - top - bottom) * b.n) / max;
    const x = left + i * slot + slot * 0.15;
    nodes.push(el('rect', { x, y: h - bottom - bh, width: slot * 0.7, height: Math.max(bh, b.n ? 1 : 0), class: 'bars__bar', rx: 2 }));
    if (b.n) nodes.push(el('text', { x: x + slot * 0.35, y: h - bottom - bh - 4, class: 'bars__count' }, fmt.format(b.n)));
    nodes.push(el('text', { x: x + slot * 0.35, y: h - bottom + 14, class: 'bars__label' }, b.le >= 1000 ? `${b.le / 1000}s` : `${b.le}`));
  });
  nodes.push(el('text', { x: w / 2, y: h - 4, class: 'bars__unit' }, 'latency up to (ms)'));
  bars.replaceChildren(...nodes);
}

function drawSpark() {
  const w = 480, h = 120, top = 20, bottom = 18, pad = 6;
  const peak = Math.max(0, ...rates);
  const max = Math.max(1, peak);
  // Fill from the left; once the window is full, the oldest sample scrolls off.
  const slots = Math.max(30, Math.min(HISTORY, rates.length)) - 1;
  const step = (w - pad * 2) / slots;
  const y = (r) => (h - bottom - ((h - top - bottom) * r) / max).toFixed(1);
  const points = rates.map((r, i) => `${(pad + i * step).toFixed(1)},${y(r)}`);
  const last = rates[rates.length - 1] ?? 0;
  const nodes = [
    el('title', { id: 'rate-chart-title' }, `Events per second over the last ${rates.length} seconds: now ${rate(last)}, peak ${rate(peak)}`),
    el('line', { x1: pad, x2: w - pad, y1: h - bottom, y2: h - bottom, class: 'spark__axis' }),
    el('text', { x: pad, y: 12, class: 'spark__max' }, `now ${rate(last)}/s · peak ${rate(peak)}/s`),
    el('text', { x: pad, y: h - 4, class: 'spark__tick' }, `${rates.length} s ago`),
  ];
  if (points.length > 1) {
    const end = (pad + (points.length - 1) * step).toFixed(1);
    nodes.push(el('polygon', { points: `${pad},${h - bottom} ${points.join(' ')} ${end},${h - bottom}`, class: 'spark__area' }));
    nodes.push(el('polyline', { points: points.join(' '), class: 'spark__line' }));
  }
  spark.replaceChildren(...nodes);
}

function render(s, now) {
  put('instance_id', s.instance_id ?? '—');
  for (const key of ['connections', 'users', 'events_consumed', 'frames_sent', 'poison_records', 'stale_dropped', 'slow_client_closes', 'consumer_lag']) {
    put(key, s[key] == null ? '—' : fmt.format(s[key]));
  }
  put('uptime_s', s.uptime_s == null ? '—' : uptime(s.uptime_s));
  const q = s.push_latency_ms ?? {};
  for (const key of ['p50', 'p90', 'p99', 'max']) put(key, ms(q[key]));
  if (previous && now > previous.at) {
    const dt = (now - previous.at) / 1000;
    // A restarted instance counts from zero again: never show a negative rate.
    const events = Math.max(0, s.events_consumed - previous.stats.events_consumed) / dt;
    const frames = Math.max(0, s.frames_sent - previous.stats.frames_sent) / dt;
    put('events_per_s', rate(events));
    put('frames_per_s', rate(frames));
    rates.push(events);
    if (rates.length > HISTORY) rates.shift();
    drawSpark();
  }
  previous = { stats: s, at: now };
  if (Array.isArray(s.push_latency_buckets)) drawBars(s.push_latency_buckets);
}

async function poll() {
  try {
    const res = await fetch('/api/stats', { cache: 'no-store', headers: { accept: 'application/json' } });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    render(await res.json(), performance.now());
    if (status.dataset.ok === 'false') announce('Live figures are back.');
    status.textContent = `Live: updated every ${POLL_MS / 1000} s, last at ${new Date().toLocaleTimeString()}.`;
    status.dataset.ok = 'true';
  } catch (err) {
    if (status.dataset.ok !== 'false') announce('Live figures are unavailable; retrying.');
    status.textContent = `Stats unavailable (${err.message}); retrying.`;
    status.dataset.ok = 'false';
  } finally {
    setTimeout(poll, document.hidden ? POLL_MS * 5 : POLL_MS);
  }
}

poll();
