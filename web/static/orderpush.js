/**
 * Orderpush client: live order statuses over the `orderpush.v1` WebSocket
 * protocol. One ES module, no dependencies, no build step; runs in browsers
 * and in Node >= 20 (pass a `WebSocket` constructor where there is no global).
 *
 * @example
 *   import { connect } from './orderpush.js';
 *   const client = connect({ url: 'wss://shop.example/ws', getToken: fetchToken });
 *   client.on('orders', (orders) => render([...orders.values()]));
 *
 * @module orderpush
 */

/** Default reconnect backoff: full jitter, `random(0, min(maxMs, initialMs * factor ** attempt))`. */
export const DEFAULT_BACKOFF = Object.freeze({ initialMs: 500, maxMs: 30000, factor: 2 });

const OPEN = 1; // WebSocket.OPEN
const noop = () => {};

/**
 * The dedupe rule of the protocol: an event is new when its cursor comes
 * after the last cursor held. Cursors are `<epoch>-<seq>` and compare as
 * that pair of numbers; the server sends each user's events in that order,
 * without gaps, so a repeat (a replay after a resume, a route sent twice)
 * is exactly an event whose cursor is not after the last one.
 * @param {string | undefined} cursor
 * @param {string | undefined} last
 * @returns {boolean} true unless both are cursors and `cursor` is not after `last`
 */
export function cursorAfter(cursor, last) {
  const a = /^(\d+)-(\d+)$/.exec(cursor ?? '');
  const b = /^(\d+)-(\d+)$/.exec(last ?? '');
  if (!a || !b) return true;
  const [ea, sa, eb, sb] = [a[1], a[2], b[1], b[2]].map(Number);
  return ea > eb || (ea === eb && sa > sb);
}

/**
 * Decode the payload of a JWT without verifying it (the server verifies).
 * @param {string} token
 * @returns {Record<string, any>} the claims, or `{}` when `token` is not a JWT
 */
export function decodeJwt(token) {
  try {
    const b64 = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes)) || {};
  } catch {
    return {};
  }
}

/**
 * A self-healing connection to the Orderpush gateway. It authenticates,
 * keeps the user's orders up to date, resumes from the last cursor after a
 * reconnect, drops duplicate and stale events, and detects dead connections.
 * See README.md for the state machine and the close-code rules.
 */
export class OrderpushClient {
  #o; // options, defaults applied
  #url;
  #state = 'closed';
  #attempt = 0;
  #gen = 0; // bumped whenever the current connection is abandoned
  #ws;
  #token;
  #cursor;
  #user; // user the known orders belong to
  #orders = new Map();
  #listeners = new Map();
  #timer; // reconnect delay
  #pinger;
  #watchdog;
  #renewer; // re-auth before the token expires
  #deadMs; // silence after which the connection counts as dead

  /** @param {object} [options] see `OrderpushOptions` in orderpush.d.ts and README.md */
  constructor(options = {}) {
    const loc = globalThis.location;
    this.#o = {
      WebSocket: globalThis.WebSocket,
      setTimeout: (fn, ms) => setTimeout(fn, ms),
      clearTimeout: (id) => clearTimeout(id),
      random: Math.random,
      now: Date.now,
      tokenMarginMs: 30000,
      connectTimeoutMs: 15000,
      storageKey: 'orderpush',
      // explicit `undefined`s keep the defaults
      ...Object.fromEntries(Object.entries(options).filter((entry) => entry[1] !== undefined)),
      backoff: { ...DEFAULT_BACKOFF, ...options.backoff },
    };
    this.#url = options.url ?? (loc && `${loc.protocol === 'https:' ? 'wss' : 'ws'}://${loc.host}/ws`);
    this.#token = options.token;
    const saved = options.cursor === undefined ? this.#load() : options;
    this.#cursor = saved.cursor;
    this.#user = saved.user;
    for (const order of saved.orders ?? []) this.#orders.set(order.order_id, Object.freeze({ ...order }));
  }

  /** @returns {'connecting'|'open'|'reconnecting'|'closed'} */
  get state() { return this.#state; }
  /** The last cursor seen (sent in `auth` on reconnect), or undefined. */
  get cursor() { return this.#cursor; }
  /** The user id from the last `welcome`, or from storage. */
  get userId() { return this.#user; }

  /** A copy of the known orders, by order_id. */
  orders() { return new Map(this.#orders); }

  /** The known state of one order, or undefined. */
  order(orderId) { return this.#orders.get(orderId); }

  /**
   * Listen to `state`, `welcome`, `snapshot`, `event`, `order`, `orders`,
   * `resumed`, `error` or `message`. Returns a function that unsubscribes.
   */
  on(name, callback) {
    let set = this.#listeners.get(name);
    if (!set) this.#listeners.set(name, (set = new Set()));
    set.add(callback);
    return () => set.delete(callback);
  }

  /** Listen to `order` notifications for one order only. Returns an unsubscribe function. */
  onOrder(orderId, callback) {
    return this.on('order', (change) => change.order_id === orderId && callback(change));
  }

  /** Start connecting (no-op unless closed). Returns the client. */
  connect() {
    if (this.#state === 'closed') {
      if (!this.#o.WebSocket) throw new TypeError('orderpush: no WebSocket; pass the `WebSocket` option');
      this.#attempt = 0;
      this.#dial();
    }
    return this;
  }

  /** Drop the current connection (if any) and connect again now, e.g. when the browser comes back online. */
  reconnect() {
    if (this.#state !== 'closed') this.#dial();
  }

  /** Close for good: no more reconnects (until `connect()` is called again). */
  close() {
    this.#drop();
    this.#set('closed');
  }

  // ---- connection lifecycle ------------------------------------------------

  async #dial() {
    this.#drop();
    const gen = this.#gen;
    const { getToken, WebSocket, protocols } = this.#o;
    this.#deadMs = this.#o.connectTimeoutMs;
    this.#watch(); // also bounds a slow getToken()
    this.#set('connecting');
    if (gen !== this.#gen) return; // a listener closed or restarted us
    if (getToken && this.#tokenStale()) {
      try {
        this.#token = await getToken();
      } catch (err) {
        if (gen === this.#gen) {
          this.#error('token', `getToken failed: ${err?.message ?? err}`, false);
          this.#lost();
        }
        return;
      }
      if (gen !== this.#gen) return; // closed or restarted meanwhile
    }
    const token = this.#token;
    // Never resume another user's history: the cursor and orders are per user.
    const sub = token && decodeJwt(token).sub;
    if (sub != null && this.#user !== undefined && sub !== this.#user) this.#reset();
    let ws;
    try {
      ws = this.#ws = protocols ? new WebSocket(this.#url, protocols) : new WebSocket(this.#url);
    } catch (err) {
      return this.#fail('connect', `cannot open ${this.#url}: ${err?.message ?? err}`);
    }
    ws.onerror = noop; // a close event follows
    ws.onopen = () => token && this.#send({ type: 'auth', token, cursor: this.#cursor });
    ws.onmessage = (ev) => this.#message(ev.data);
    ws.onclose = (ev) => this.#closed(ev.code, ev.reason);
  }

  /** The socket closed under us: decide whether and when to reconnect. */
  #closed(code, reason) {
    if (code === 4003) return this.#fail(code, reason || 'origin not allowed');
    if (code === 4001) {
      if (!this.#o.getToken) return this.#fail(code, reason || 'token invalid or expired');
      this.#token = undefined; // refresh before the next attempt
    }
    this.#lost(code, reason);
  }

  /** Schedule a reconnect with exponential backoff and full jitter. */
  #lost(code, reason) {
    this.#drop();
    const { initialMs, maxMs, factor } = this.#o.backoff;
    const n = this.#attempt++;
    const r = this.#o.random();
    // A draining server says when to come back (`retry_after_ms=N` in the
    // 1012 reason): it spreads its clients' reconnects over time.
    const hinted = code === 1012 ? /retry_after_ms=(\d+)/.exec(reason ?? '') : null;
    const delayMs =
      code === 4029 || code === 4030 ? (maxMs * (1 + r)) / 2 // rate limited, too many sockets: back off hard
      : hinted ? Math.min(Number(hinted[1]), maxMs)
      : code === 1012 ? r * initialMs // server restarting: come back promptly
      : r * Math.min(maxMs, initialMs * factor ** n);
    this.#timer = this.#o.setTimeout(() => this.#dial(), delayMs);
    this.#set('reconnecting', { delayMs, code, reason });
  }

  /** Give up: emit a fatal error and go to `closed`. */
  #fail(code, message) {
    this.#drop();
    this.#set('closed', { code });
    this.#error(code, message, true);
  }

  /** Abandon the current socket and timers. */
  #drop() {
    this.#gen++;
    const { clearTimeout } = this.#o;
    clearTimeout(this.#timer);
    clearTimeout(this.#pinger);
    clearTimeout(this.#renewer);
    clearTimeout(this.#watchdog);
    const ws = this.#ws;
    this.#ws = undefined;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = null;
      try {
        if (ws.readyState < 2) ws.close(1000);
      } catch {
        /* already closing */
      }
    }
  }

  /** (Re)arm the dead-connection timer. */
  #watch() {
    this.#o.clearTimeout(this.#watchdog);
    this.#watchdog = this.#o.setTimeout(() => this.#lost(undefined, 'timeout'), this.#deadMs);
  }

  /**
   * While open, send a fresh token (`auth` on the open socket) shortly before
   * the current one expires, so the server never has to close with 4001.
   */
  #renew() {
    const { getToken, now, tokenMarginMs } = this.#o;
    const { exp } = decodeJwt(this.#token ?? '');
    if (!getToken || typeof exp !== 'number') return;
    const gen = this.#gen;
    // at least 5 s (a getToken that keeps giving an old token must not spin),
    // at most a day (timers overflow past ~24 days)
    const delayMs = Math.min(Math.max(exp * 1000 - now() - tokenMarginMs, 5000), 864e5);
    this.#renewer = this.#o.setTimeout(async () => {
      if (this.#tokenStale()) {
        try {
          const token = await getToken();
          if (gen !== this.#gen) return;
          this.#token = token;
          this.#send({ type: 'auth', token });
        } catch (err) {
          // no luck: the server closes with 4001 at expiry and we reconnect
          return gen === this.#gen && this.#error('token', `getToken failed: ${err?.message ?? err}`, false);
        }
      }
      this.#renew();
    }, delayMs);
  }

  #tokenStale() {
    if (!this.#token) return true;
    const { exp } = decodeJwt(this.#token);
    return typeof exp === 'number' && exp * 1000 - this.#o.now() <= this.#o.tokenMarginMs;
  }

  #send(msg) {
    if (this.#ws?.readyState === OPEN) this.#ws.send(JSON.stringify(msg));
  }

  // ---- messages -------------------------------------------------------------

  #message(data) {
    let m;
    try {
      m = JSON.parse(typeof data === 'string' ? data : String(data));
    } catch {
      return; // not JSON: ignore
    }
    if (!m || typeof m !== 'object') return;
    this.#watch(); // any message proves the connection alive
    if (m.type === 'event' && !cursorAfter(m.cursor, this.#cursor)) {
      this.#emit('message', m); // a repeat: already passed on
      return;
    }
    if (m.cursor != null && /^(snapshot|event|resumed)$/.test(m.type)) this.#cursor = m.cursor;
    switch (m.type) {
      case 'welcome': {
        const beatMs = (m.heartbeat_s > 0 ? m.heartbeat_s : 25) * 1000;
        this.#deadMs = this.#o.heartbeatTimeoutMs ?? 2.5 * beatMs;
        this.#watch();
        if (this.#user !== undefined && m.user_id !== this.#user) {
          // Another user (a token we could not decode): start over without their cursor.
          const sentCursor = this.#token && this.#cursor != null;
          this.#reset();
          if (sentCursor) return this.#dial();
        }
        this.#user = m.user_id;
        this.#attempt = 0;
        const ping = () => {
          this.#send({ type: 'ping' });
          this.#pinger = this.#o.setTimeout(ping, beatMs);
        };
        this.#pinger = this.#o.setTimeout(ping, beatMs);
        this.#renew();
        // Cookie auth sends no `auth`: ask for the missed events explicitly.
        if (!this.#token && this.#cursor != null) this.#send({ type: 'resume', cursor: this.#cursor });
        this.#set('open');
        this.#emit('welcome', m);
        break;
      }
      case 'snapshot': {
        const ids = new Set(this.#orders.keys());
        this.#orders.clear();
        for (const order of Array.isArray(m.orders) ? m.orders : []) {
          if (order?.order_id == null) continue;
          this.#orders.set(order.order_id, Object.freeze({ ...order }));
          ids.add(order.order_id);
        }
        this.#save();
        this.#emit('snapshot', { orders: [...this.#orders.values()], cursor: this.#cursor });
        for (const id of ids) this.#emit('order', { order_id: id, order: this.#orders.get(id) });
        this.#emit('orders', this.orders());
        break;
      }
      case 'event': {
        const ev = m.event;
        const verdict = ev && typeof ev === 'object' ? this.#accept(ev) : 0;
        this.#save();
        if (!verdict) break;
        this.#emit('event', ev);
        if (ev.order_id != null) this.#emit('order', { order_id: ev.order_id, order: this.#orders.get(ev.order_id), event: ev });
        if (verdict > 1) this.#emit('orders', this.orders());
        break;
      }
      case 'resumed':
        this.#save();
        this.#emit('resumed', { replayed: m.replayed, cursor: this.#cursor });
        break;
      case 'error':
        this.#error(m.code, m.message, false);
        break;
      // 'pong' and unknown types: nothing to do
    }
    this.#emit('message', m);
  }

  /**
   * Apply a new event (repeats were dropped by cursor). Returns 0 to drop it
   * (a stale order version: a status never goes back), 1 to pass it on, 2
   * when it also changed an order's known status.
   */
  #accept(ev) {
    if (!String(ev.type).startsWith('order.') || typeof ev.version !== 'number') return 1;
    const known = this.#orders.get(ev.order_id);
    if (known && known.version >= ev.version) return 0; // stale or duplicate
    this.#orders.set(
      ev.order_id,
      Object.freeze({
        ...known,
        order_id: ev.order_id,
        status: ev.status ?? known?.status,
        version: ev.version,
        updated_at: ev.occurred_at,
      }),
    );
    return 2;
  }

  /** Forget everything known (the user changed). */
  #reset() {
    this.#orders.clear();
    this.#cursor = this.#user = undefined;
    this.#save();
    this.#emit('orders', this.orders());
  }

  // ---- helpers --------------------------------------------------------------

  #set(state, extra) {
    const previous = this.#state;
    if (state === previous) return;
    this.#state = state;
    this.#emit('state', { state, previous, attempt: this.#attempt, ...extra });
  }

  #error(code, message, fatal) {
    this.#emit('error', Object.assign(new Error(message ?? String(code)), { code, fatal }));
  }

  #emit(name, data) {
    for (const callback of [...(this.#listeners.get(name) ?? [])]) {
      try {
        callback(data);
      } catch (err) {
        queueMicrotask(() => {
          throw err; // report like EventTarget does, without breaking the client
        });
      }
    }
  }

  #load() {
    try {
      return JSON.parse(this.#o.storage?.getItem(this.#o.storageKey)) || {};
    } catch {
      return {};
    }
  }

  #save() {
    try {
      this.#o.storage?.setItem(
        this.#o.storageKey,
        JSON.stringify({ user: this.#user, cursor: this.#cursor, orders: [...this.#orders.values()] }),
      );
    } catch {
      /* storage full or unavailable: keep going in memory */
    }
  }
}

/**
 * Create a client and start connecting.
 * @param {object} options see `OrderpushOptions` in orderpush.d.ts
 * @returns {OrderpushClient}
 */
export const connect = (options) => new OrderpushClient(options).connect();
