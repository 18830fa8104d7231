// Unit tests of the Orderpush JS client against a fake WebSocket and a fake
// clock: `node --test web/tests/` (or `npm test` in web/).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { OrderpushClient, connect, cursorAfter, decodeJwt, DEFAULT_BACKOFF } from '../static/orderpush.js';

// ---- fakes ------------------------------------------------------------------

/** A fake WebSocket class; each call returns a fresh class with its own list of instances. */
function fakeWebSocket() {
  class FakeWebSocket {
    static instances = [];
    readyState = 0;
    sent = [];
    closedWith = undefined;
    constructor(url, protocols) {
      this.url = url;
      this.protocols = protocols;
      FakeWebSocket.instances.push(this);
    }
    send(text) {
      assert.equal(this.readyState, 1, 'send() on a socket that is not open');
      this.sent.push(JSON.parse(text));
    }
    close(code) {
      this.closedWith = code ?? 1005;
      this.readyState = 3;
    }
    // server side
    open() {
      this.readyState = 1;
      this.onopen?.({});
    }
    receive(msg) {
      this.onmessage?.({ data: typeof msg === 'string' ? msg : JSON.stringify(msg) });
    }
    serverClose(code, reason = '') {
      this.readyState = 3;
      this.onclose?.({ code, reason, wasClean: code !== 1006 });
    }
    static get last() {
      return FakeWebSocket.instances.at(-1);
    }
  }
  return FakeWebSocket;
}

/** A fake clock: timers run only when the test advances time. */
function fakeClock(start = 1_700_000_000_000) {
  let now = start;
  let nextId = 0;
  const timers = new Map();
  return {
    now: () => now,
    setTimeout: (fn, ms) => {
      timers.set(++nextId, { at: now + Math.max(0, ms), fn });
      return nextId;
    },
    clearTimeout: (id) => timers.delete(id),
    advance(ms) {
      const end = now + ms;
      for (;;) {
        let due;
        for (const [id, t] of timers) if (t.at <= end && (!due || t.at < due[1].at)) due = [id, t];
        if (!due) break;
        timers.delete(due[0]);
        now = due[1].at;
        due[1].fn();
      }
      now = end;
    },
    /** ms until each pending timer fires */
    pending: () => [...timers.values()].map((t) => t.at - now),
  };
}

function jwt(claims) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  return `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}.sig`;
}

const flush = () => new Promise((resolve) => setImmediate(resolve));

/** A client wired to fakes, plus recorders of what it emitted. */
function setup(options = {}) {
  const WS = fakeWebSocket();
  const clock = fakeClock();
  let rnd = 0.5;
  const client = new OrderpushClient({
    url: 'ws://gateway.test/ws',
    token: jwt({ sub: 'alice', exp: clock.now() / 1000 + 3600 }),
    WebSocket: WS,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    now: clock.now,
    random: () => rnd,
    backoff: { initialMs: 100, maxMs: 1000, factor: 2 },
    ...options,
  });
  const seen = {};
  for (const name of ['state', 'welcome', 'snapshot', 'event', 'order', 'orders', 'resumed', 'error', 'message']) {
    seen[name] = [];
    client.on(name, (x) => seen[name].push(x));
  }
  return { client, WS, clock, seen, setRandom: (r) => (rnd = r) };
}

const welcome = (extra = {}) => ({ type: 'welcome', user_id: 'alice', connection_id: 'c1', heartbeat_s: 10, ...extra });

/** Open the client's current socket and greet it. */
function handshake(WS, extra) {
  WS.last.open();
  WS.last.receive(welcome(extra));
  return WS.last;
}

let seq = 0;
function orderEvent(orderId, version, status, extra = {}) {
  return {
    event_id: `ev-${++seq}`,
    type: `order.${status}`,
    order_id: orderId,
    user_id: 'alice',
    occurred_at: `2026-11-27T15:46:0${version}.000Z`,
    status,
    version,
    data: {},
    ...extra,
  };
}

// ---- handshake ----------------------------------------------------------------

test('sends auth with the token on open, without a cursor when it has none', () => {
  const { client, WS } = setup();
  client.connect();
  assert.equal(WS.instances.length, 1);
  assert.equal(WS.last.url, 'ws://gateway.test/ws');
  assert.equal(WS.last.sent.length, 0, 'nothing before open');
  WS.last.open();
  assert.equal(WS.last.sent.length, 1);
  assert.equal(WS.last.sent[0].type, 'auth');
  assert.equal(decodeJwt(WS.last.sent[0].token).sub, 'alice');
  assert.equal('cursor' in WS.last.sent[0], false);
});

test('connect() factory starts at once; missing WebSocket is a clear error', () => {
  const WS = fakeWebSocket();
  const client = connect({ url: 'ws://x/ws', token: 't', WebSocket: WS });
  assert.equal(client.state, 'connecting');
  assert.equal(WS.instances.length, 1);
  client.close();
  assert.throws(() => new OrderpushClient({ url: 'ws://x/ws', token: 't', WebSocket: null }).connect(), TypeError);
});

test('decodeJwt reads base64url UTF-8 payloads and tolerates garbage', () => {
  assert.deepEqual(decodeJwt(jwt({ sub: 'zoë', exp: 5 })), { sub: 'zoë', exp: 5 });
  assert.deepEqual(decodeJwt('not a jwt'), {});
  assert.deepEqual(decodeJwt('a.!!!.b'), {});
});

// ---- state machine -----------------------------------------------------------

test('state transitions: connecting -> open -> reconnecting -> connecting -> open -> closed', () => {
  const { client, WS, clock, seen } = setup();
  assert.equal(client.state, 'closed');
  client.connect();
  handshake(WS);
  WS.last.serverClose(1006);
  clock.advance(100);
  handshake(WS);
  client.close();
  assert.deepEqual(
    seen.state.map((s) => [s.previous, s.state]),
    [
      ['closed', 'connecting'],
      ['connecting', 'open'],
      ['open', 'reconnecting'],
      ['reconnecting', 'connecting'],
      ['connecting', 'open'],
      ['open', 'closed'],
    ],
  );
  const reconnecting = seen.state[2];
  assert.equal(reconnecting.attempt, 1);
  assert.equal(reconnecting.code, 1006);
  assert.equal(reconnecting.delayMs, 50);
  assert.equal(WS.instances[1].closedWith, 1000, 'close() closes the socket');
  clock.advance(60_000);
  assert.equal(WS.instances.length, 2, 'no reconnect after close()');
  assert.deepEqual(clock.pending(), [], 'no timers left after close()');
  assert.equal(client.state, 'closed');
});

test('close() while waiting to reconnect cancels the reconnect', () => {
  const { client, WS, clock } = setup();
  client.connect();
  handshake(WS);
  WS.last.serverClose(1011);
  assert.equal(client.state, 'reconnecting');
  client.close();
  clock.advance(60_000);
  assert.equal(WS.instances.length, 1);
  assert.equal(client.state, 'closed');
});

test('close() from inside a state listener does not leave a reconnect behind', () => {
  const { client, WS, clock } = setup();
  client.on('state', ({ state }) => state === 'reconnecting' && client.close());
  client.connect();
  handshake(WS);
  WS.last.serverClose(1006);
  assert.equal(client.state, 'closed');
  clock.advance(60_000);
  assert.equal(WS.instances.length, 1);
  assert.deepEqual(clock.pending(), []);
});

test('a socket that never opens is abandoned after connectTimeoutMs', () => {
  const { client, WS, clock, seen } = setup({ connectTimeoutMs: 5000 });
  client.connect();
  clock.advance(4999);
  assert.equal(client.state, 'connecting');
  clock.advance(1);
  assert.equal(client.state, 'reconnecting');
  assert.equal(WS.instances[0].closedWith, 1000);
  assert.equal(seen.state.at(-1).reason, 'timeout');
});

// ---- backoff -------------------------------------------------------------------

test('backoff grows by factor, is capped at maxMs, and uses full jitter', () => {
  const { client, WS, clock, seen, setRandom } = setup();
  client.connect();
  const delays = [];
  for (let i = 0; i < 7; i++) {
    WS.last.serverClose(1006); // fails before any welcome
    const s = seen.state.at(-1);
    assert.equal(s.state, 'reconnecting');
    assert.equal(s.attempt, i + 1);
    delays.push(s.delayMs);
    clock.advance(s.delayMs);
  }
  // random() = 0.5: half of min(1000, 100 * 2^n)
  assert.deepEqual(delays, [50, 100, 200, 400, 500, 500, 500]);

  // full jitter: random() = 0 gives no delay, random() -> 1 approaches the cap
  setRandom(0);
  WS.last.serverClose(1006);
  assert.equal(seen.state.at(-1).delayMs, 0);
  clock.advance(0);
  setRandom(0.999999);
  WS.last.serverClose(1006);
  const top = seen.state.at(-1).delayMs;
  assert.ok(top < 1000 && top > 999, `delay ${top} within [0, maxMs)`);
  assert.equal(clock.pending().length, 1);
  assert.ok(Math.abs(clock.pending()[0] - top) < 0.01, 'the reconnect timer uses that delay');
});

test('full jitter stays within [0, cap) for any random value', () => {
  let x = 12345;
  const lcg = () => ((x = (x * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  const { client, WS, clock, seen } = setup({ random: lcg });
  client.connect();
  for (let n = 0; n < 40; n++) {
    WS.last.serverClose(1006);
    const { delayMs } = seen.state.at(-1);
    const cap = Math.min(1000, 100 * 2 ** n);
    assert.ok(delayMs >= 0 && delayMs < cap, `attempt ${n + 1}: ${delayMs} not in [0, ${cap})`);
    clock.advance(delayMs);
  }
});

test('the attempt counter resets after a successful welcome', () => {
  const { client, WS, clock, seen } = setup();
  client.connect();
  for (let i = 0; i < 4; i++) {
    WS.last.serverClose(1006);
    clock.advance(seen.state.at(-1).delayMs);
  }
  assert.equal(seen.state.at(-1).attempt, 4);
  WS.last.open();
  WS.last.serverClose(1006); // opened but no welcome: still counts
  assert.equal(seen.state.at(-1).attempt, 5);
  clock.advance(seen.state.at(-1).delayMs);
  handshake(WS);
  assert.equal(seen.state.at(-1).state, 'open');
  assert.equal(seen.state.at(-1).attempt, 0);
  WS.last.serverClose(1006);
  assert.equal(seen.state.at(-1).attempt, 1);
  assert.equal(seen.state.at(-1).delayMs, 50, 'back to initialMs');
});

test('defaults: 500 ms initial, 30 s cap, factor 2', () => {
  assert.deepEqual({ ...DEFAULT_BACKOFF }, { initialMs: 500, maxMs: 30000, factor: 2 });
  const { client, WS, seen } = setup({ backoff: undefined, random: () => 0.5 });
  client.connect();
  WS.last.serverClose(1006);
  assert.equal(seen.state.at(-1).delayMs, 250);
});

test('4029 (rate limited) backs off between maxMs/2 and maxMs; 1012 comes back within initialMs', () => {
  const { client, WS, clock, seen, setRandom } = setup();
  client.connect();
  handshake(WS);
  setRandom(0);
  WS.last.serverClose(4029);
  assert.equal(seen.state.at(-1).delayMs, 500);
  clock.advance(500);
  handshake(WS);
  setRandom(0.99);
  WS.last.serverClose(4029);
  assert.ok(seen.state.at(-1).delayMs >= 990);
  clock.advance(1000);
  handshake(WS);
  for (let i = 0; i < 5; i++) {
    // even after failures, a restarting server gets a prompt retry
    WS.last.serverClose(1012);
    assert.ok(seen.state.at(-1).delayMs < 100, `1012 delay ${seen.state.at(-1).delayMs}`);
    clock.advance(100);
  }
});

test('4030 (too many sockets for this user) backs off as hard as 4029', () => {
  const { client, WS, seen, setRandom } = setup();
  client.connect();
  handshake(WS);
  setRandom(0);
  WS.last.serverClose(4030, 'at most 20 sockets per user');
  assert.equal(seen.state.at(-1).delayMs, 500);
  assert.equal(seen.state.at(-1).state, 'reconnecting');
});

test('1012 with retry_after_ms (a draining server) waits exactly that long, capped at maxMs', () => {
  const { client, WS, clock, seen, setRandom } = setup({ backoff: undefined });
  client.connect();
  handshake(WS);
  setRandom(0.99);
  const before = WS.instances.length;
  WS.last.serverClose(1012, 'server restarting; retry_after_ms=740');
  assert.equal(seen.state.at(-1).delayMs, 740);
  clock.advance(739);
  assert.equal(WS.instances.length, before, 'reconnected before the hinted time');
  clock.advance(1);
  assert.equal(WS.instances.length, before + 1);
  handshake(WS);
  WS.last.serverClose(1012, 'retry_after_ms=99999999');
  assert.equal(seen.state.at(-1).delayMs, DEFAULT_BACKOFF.maxMs);
  clock.advance(DEFAULT_BACKOFF.maxMs);
  handshake(WS);
  WS.last.serverClose(1012, 'server restarting'); // no hint: prompt, as before
  assert.ok(seen.state.at(-1).delayMs < DEFAULT_BACKOFF.initialMs);
});

test('4008, 4009, 1009, 1011, 1006 and 1000 all reconnect', () => {
  for (const code of [4008, 4009, 1009, 1011, 1006, 1000]) {
    const { client, WS, clock } = setup();
    client.connect();
    handshake(WS);
    WS.last.serverClose(code);
    assert.equal(client.state, 'reconnecting', `code ${code}`);
    clock.advance(1000);
    assert.equal(WS.instances.length, 2, `code ${code}`);
  }
});

// ---- close codes -------------------------------------------------------------

test('4003 (origin not allowed) goes to closed with a fatal error and never reconnects', () => {
  const { client, WS, clock, seen } = setup();
  client.connect();
  WS.last.open();
  WS.last.serverClose(4003, 'origin');
  assert.equal(client.state, 'closed');
  assert.equal(seen.state.at(-1).code, 4003);
  assert.equal(seen.error.length, 1);
  assert.equal(seen.error[0].code, 4003);
  assert.equal(seen.error[0].fatal, true);
  assert.ok(seen.error[0] instanceof Error);
  clock.advance(10 * 60_000);
  assert.equal(WS.instances.length, 1);
  assert.ok(!seen.state.some((s) => s.state === 'reconnecting'));
});

test('4001 calls getToken for a fresh token and reconnects with it', async () => {
  const tokens = [jwt({ sub: 'alice', exp: 1_700_000_000 + 3600, n: 1 }), jwt({ sub: 'alice', exp: 1_700_000_000 + 3600, n: 2 })];
  let calls = 0;
  const { client, WS, clock } = setup({ token: undefined, getToken: async () => tokens[calls++] });
  client.connect();
  await flush();
  assert.equal(calls, 1, 'no token yet: getToken before the first connect');
  handshake(WS);
  assert.equal(decodeJwt(WS.last.sent[0].token).n, 1);
  WS.last.serverClose(4001);
  assert.equal(client.state, 'reconnecting');
  clock.advance(100);
  await flush();
  assert.equal(calls, 2, '4001 forces a refresh even though the token had not expired');
  assert.equal(WS.instances.length, 2);
  WS.last.open();
  assert.equal(decodeJwt(WS.last.sent[0].token).n, 2);
});

test('4001 without getToken goes to closed with a fatal error', () => {
  const { client, WS, clock, seen } = setup();
  client.connect();
  handshake(WS);
  WS.last.serverClose(4001);
  assert.equal(client.state, 'closed');
  assert.equal(seen.error[0].code, 4001);
  assert.equal(seen.error[0].fatal, true);
  clock.advance(60_000);
  assert.equal(WS.instances.length, 1);
});

test('before connecting, getToken is called only when the token is within tokenMarginMs of exp', async () => {
  const clock0 = 1_700_000_000;
  const fresh = jwt({ sub: 'alice', exp: clock0 + 3600 });
  for (const [expIn, expectCalls] of [
    [120, 0],
    [61, 0],
    [60, 1],
    [-5, 1],
  ]) {
    let calls = 0;
    const { client, WS } = setup({
      token: jwt({ sub: 'alice', exp: clock0 + expIn }),
      tokenMarginMs: 60_000,
      getToken: async () => (calls++, fresh),
    });
    client.connect();
    await flush();
    assert.equal(calls, expectCalls, `token expiring in ${expIn} s`);
    WS.last.open();
    assert.equal(WS.last.sent[0].token === fresh, expectCalls === 1);
    client.close();
  }
});

test('while open, the token is renewed in place (auth on the same socket) before it expires', async () => {
  const clock0 = 1_700_000_000;
  const tokens = [jwt({ sub: 'alice', exp: clock0 + 600 }), jwt({ sub: 'alice', exp: clock0 + 1200 })];
  let calls = 0;
  const { client, WS, clock } = setup({
    token: jwt({ sub: 'alice', exp: clock0 + 120 }),
    tokenMarginMs: 60_000,
    heartbeatTimeoutMs: 3_600_000,
    getToken: async () => tokens[calls++],
  });
  client.connect();
  const ws = handshake(WS);
  clock.advance(59_999);
  await flush();
  assert.equal(calls, 0, 'not yet inside the margin');
  clock.advance(1);
  await flush();
  assert.equal(calls, 1);
  assert.deepEqual(ws.sent.at(-1), { type: 'auth', token: tokens[0] });
  clock.advance(479_999); // the next renewal is due 60 s before the new exp (t = 540 s)
  await flush();
  assert.equal(calls, 1);
  clock.advance(1);
  await flush();
  assert.equal(calls, 2);
  assert.deepEqual(ws.sent.at(-1), { type: 'auth', token: tokens[1] });
  assert.equal(WS.instances.length, 1, 'no reconnect involved');
  assert.equal(client.state, 'open');
  client.close();
  assert.deepEqual(clock.pending(), []);
});

test('a getToken that keeps returning a stale token is not called in a tight loop', async () => {
  const stale = jwt({ sub: 'alice', exp: 1_700_000_000 + 10 });
  let calls = 0;
  const { client, WS, clock } = setup({ token: stale, heartbeatTimeoutMs: 3_600_000, getToken: async () => (calls++, stale) });
  client.connect();
  await flush();
  handshake(WS);
  const before = calls;
  for (let i = 0; i < 10; i++) {
    clock.advance(1000);
    await flush();
  }
  assert.ok(calls - before <= 2, `${calls - before} calls in 10 s`);
});

test('a failing getToken emits a non-fatal error and retries with backoff', async () => {
  let calls = 0;
  const { client, WS, clock, seen } = setup({
    token: undefined,
    getToken: async () => {
      if (++calls === 1) throw new Error('network down');
      return jwt({ sub: 'alice', exp: 1_700_000_000 + 3600 });
    },
  });
  client.connect();
  await flush();
  assert.equal(client.state, 'reconnecting');
  assert.equal(seen.error[0].fatal, false);
  assert.match(seen.error[0].message, /network down/);
  assert.equal(WS.instances.length, 0);
  clock.advance(100);
  await flush();
  assert.equal(calls, 2);
  assert.equal(WS.instances.length, 1);
});

test('close() while getToken is pending opens no socket', async () => {
  let release;
  const { client, WS } = setup({ token: undefined, getToken: () => new Promise((r) => (release = r)) });
  client.connect();
  client.close();
  release(jwt({ sub: 'alice', exp: 1_700_000_000 + 3600 }));
  await flush();
  assert.equal(WS.instances.length, 0);
  assert.equal(client.state, 'closed');
});

// ---- heartbeat -----------------------------------------------------------------

test('pings every heartbeat_s and reconnects after heartbeatTimeoutMs (2.5 x heartbeat_s) of silence', () => {
  const { client, WS, clock, seen } = setup();
  client.connect();
  const ws = handshake(WS, { heartbeat_s: 10 });
  clock.advance(10_000);
  assert.deepEqual(ws.sent.at(-1), { type: 'ping' });
  clock.advance(10_000);
  assert.equal(ws.sent.filter((m) => m.type === 'ping').length, 2);
  ws.receive({ type: 'pong' }); // t = 20 s: alive, watchdog now ends at 45 s
  clock.advance(24_999);
  assert.equal(client.state, 'open');
  clock.advance(1);
  assert.equal(client.state, 'reconnecting');
  assert.equal(seen.state.at(-1).reason, 'timeout');
  assert.equal(ws.closedWith, 1000, 'the dead socket is closed');
  clock.advance(1000);
  assert.equal(WS.instances.length, 2, 'and a new one is opened');
  ws.serverClose(1006); // a late close of the old socket is ignored
  assert.equal(client.state, 'connecting');
});

test('any message, not only pong, keeps the connection alive; heartbeatTimeoutMs overrides', () => {
  const { client, WS, clock } = setup({ heartbeatTimeoutMs: 3000 });
  client.connect();
  const ws = handshake(WS, { heartbeat_s: 60 });
  for (let i = 0; i < 5; i++) {
    clock.advance(2900);
    ws.receive({ type: 'event', cursor: `c${i}`, event: { event_id: `x${i}`, type: 'payment.authorized', order_id: 'o' } });
  }
  assert.equal(client.state, 'open');
  clock.advance(3000);
  assert.equal(client.state, 'reconnecting');
});

// ---- resume ---------------------------------------------------------------------

test('reconnect sends the last cursor in auth; resumed is reported', () => {
  const { client, WS, clock, seen } = setup();
  client.connect();
  let ws = handshake(WS);
  ws.receive({ type: 'snapshot', orders: [], cursor: '100-0' });
  ws.receive({ type: 'event', cursor: '101-0', event: orderEvent('o1', 1, 'pending') });
  ws.receive({ type: 'event', cursor: '102-0', event: { event_id: 'p1', type: 'payment.authorized', order_id: 'o1' } });
  assert.equal(client.cursor, '102-0');
  ws.serverClose(1012);
  clock.advance(100);
  ws = WS.last;
  assert.notEqual(ws, WS.instances[0]);
  ws.open();
  assert.equal(ws.sent[0].type, 'auth');
  assert.equal(ws.sent[0].cursor, '102-0');
  ws.receive(welcome());
  ws.receive({ type: 'event', cursor: '103-0', event: orderEvent('o1', 2, 'confirmed') });
  ws.receive({ type: 'resumed', replayed: 1, cursor: '103-0' });
  assert.deepEqual(seen.resumed, [{ replayed: 1, cursor: '103-0' }]);
  assert.equal(client.order('o1').status, 'confirmed');
  assert.equal(client.cursor, '103-0');
});

test('the cursor advances even for dropped duplicates', () => {
  const { client, WS } = setup();
  client.connect();
  const ws = handshake(WS);
  const ev = orderEvent('o1', 1, 'pending');
  ws.receive({ type: 'event', cursor: '1-0', event: ev });
  ws.receive({ type: 'event', cursor: '2-0', event: ev });
  assert.equal(client.cursor, '2-0');
});

test('an initial cursor option is sent on the first auth', () => {
  const { client, WS } = setup({ cursor: '42-0' });
  client.connect();
  WS.last.open();
  assert.equal(WS.last.sent[0].cursor, '42-0');
});

// ---- dedupe -----------------------------------------------------------------------

test('order events are deduped by version', () => {
  const { client, WS, seen } = setup();
  client.connect();
  const ws = handshake(WS);
  ws.receive({ type: 'event', cursor: '1', event: orderEvent('o1', 1, 'pending') });
  ws.receive({ type: 'event', cursor: '2', event: orderEvent('o1', 2, 'confirmed') });
  ws.receive({ type: 'event', cursor: '3', event: orderEvent('o1', 1, 'pending') }); // older, new event_id
  ws.receive({ type: 'event', cursor: '4', event: orderEvent('o1', 2, 'cancelled') }); // same version, new event_id
  assert.deepEqual(
    seen.event.map((e) => [e.order_id, e.version, e.status]),
    [
      ['o1', 1, 'pending'],
      ['o1', 2, 'confirmed'],
    ],
  );
  assert.equal(client.order('o1').status, 'confirmed');
  assert.equal(client.order('o1').version, 2);
  assert.equal(client.order('o1').updated_at, '2026-11-27T15:46:02.000Z');
  assert.equal(seen.orders.length, 2, 'orders emitted once per accepted status change');
});

test('events are deduped by cursor, including events without a version', () => {
  const { client, WS, seen } = setup();
  client.connect();
  const ws = handshake(WS);
  const pay = { event_id: 'pay-1', type: 'payment.authorized', order_id: 'o1', user_id: 'alice', occurred_at: 'x', data: {} };
  const inv = { ...pay, event_id: 'inv-1', type: 'inventory.reserved' };
  ws.receive({ type: 'event', cursor: '7-1', event: pay });
  ws.receive({ type: 'event', cursor: '7-2', event: inv });
  ws.receive({ type: 'event', cursor: '7-1', event: { ...pay } }); // a repeat
  ws.receive({ type: 'event', cursor: '7-2', event: { ...inv } });
  assert.deepEqual(
    seen.event.map((e) => e.event_id),
    ['pay-1', 'inv-1'],
  );
  assert.equal(client.cursor, '7-2');
  assert.equal(seen.message.length, 5, 'repeats still reach message listeners');
  assert.equal(client.order('o1'), undefined, 'non-order events do not make up an order status');
  assert.equal(seen.order.length, 2, 'but they are reported per order');
  assert.equal(seen.order[0].event.event_id, 'pay-1');
});

test('cursorAfter compares epoch, then seq, as numbers', () => {
  assert.equal(cursorAfter('7-10', '7-9'), true, 'numbers, not strings');
  assert.equal(cursorAfter('7-9', '7-9'), false);
  assert.equal(cursorAfter('7-8', '7-9'), false);
  assert.equal(cursorAfter('8-1', '7-900'), true, 'a new epoch of the history');
  assert.equal(cursorAfter('6-900', '7-1'), false);
  assert.equal(cursorAfter('1796138486194-1', '0-0'), true);
  assert.equal(cursorAfter('7-1', undefined), true);
  assert.equal(cursorAfter('opaque', '7-1'), true, 'not a cursor: never taken for a repeat');
});

test('after a resume, the replay repeats nothing the client has', () => {
  const { client, WS, clock, seen } = setup();
  client.connect();
  let ws = handshake(WS);
  ws.receive({ type: 'snapshot', orders: [], cursor: '7-0' });
  ws.receive({ type: 'event', cursor: '7-1', event: orderEvent('o1', 1, 'pending') });
  ws.receive({ type: 'event', cursor: '7-2', event: orderEvent('o2', 1, 'pending') });
  ws.serverClose(1006);
  clock.advance(60000);
  ws = WS.last;
  ws.open();
  assert.equal(ws.sent[0].cursor, '7-2');
  ws.receive(welcome());
  ws.receive({ type: 'event', cursor: '7-2', event: orderEvent('o2', 1, 'pending') }); // a server repeating itself
  ws.receive({ type: 'event', cursor: '7-3', event: orderEvent('o1', 2, 'confirmed') });
  ws.receive({ type: 'resumed', replayed: 1, cursor: '7-3' });
  assert.deepEqual(seen.event.map((e) => [e.order_id, e.version]), [['o1', 1], ['o2', 1], ['o1', 2]]);
});

test('a non-order event carrying a version does not shadow the order event', () => {
  const { client, WS, seen } = setup();
  client.connect();
  const ws = handshake(WS);
  ws.receive({ type: 'event', cursor: '1', event: { event_id: 'p', type: 'payment.declined', order_id: 'o9', status: 'cancelled', version: 1 } });
  ws.receive({ type: 'event', cursor: '2', event: orderEvent('o9', 1, 'cancelled') });
  assert.equal(seen.event.length, 2);
  assert.equal(client.order('o9').status, 'cancelled');
});

test('a snapshot replaces known state and makes older order events stale', () => {
  const { client, WS, clock, seen } = setup();
  client.connect();
  let ws = handshake(WS);
  ws.receive({ type: 'event', cursor: '1', event: orderEvent('o1', 1, 'pending') });
  ws.receive({ type: 'event', cursor: '2', event: orderEvent('gone', 1, 'pending') });
  ws.serverClose(1006);
  clock.advance(100);
  ws = handshake(WS);
  ws.receive({
    type: 'snapshot',
    cursor: '50',
    orders: [
      { order_id: 'o1', status: 'cancelled', version: 3, updated_at: 't3' },
      { order_id: 'o2', status: 'shipped', version: 7, updated_at: 't7', extra: 'kept' },
    ],
  });
  assert.deepEqual([...client.orders().keys()], ['o1', 'o2'], 'orders not in the snapshot are gone');
  assert.equal(client.cursor, '50');
  assert.deepEqual(seen.snapshot.at(-1).cursor, '50');
  assert.equal(seen.snapshot.at(-1).orders.length, 2);
  // a late, stale event for o1 is dropped
  ws.receive({ type: 'event', cursor: '51', event: orderEvent('o1', 2, 'confirmed') });
  ws.receive({ type: 'event', cursor: '52', event: orderEvent('o1', 3, 'confirmed') });
  assert.equal(client.order('o1').status, 'cancelled');
  assert.equal(seen.event.filter((e) => e.order_id === 'o1').length, 1, 'only the v1 event before the snapshot');
  // unknown statuses and unknown fields are kept as they are
  assert.equal(client.order('o2').status, 'shipped');
  assert.equal(client.order('o2').extra, 'kept');
  // per-order notifications for every order touched, with undefined for removed ones
  const last = seen.order.slice(-3);
  assert.deepEqual(
    last.map((c) => [c.order_id, c.order?.status]),
    [
      ['o1', 'cancelled'],
      ['gone', undefined],
      ['o2', 'shipped'],
    ],
  );
  ws.receive({ type: 'event', cursor: '53', event: orderEvent('o1', 4, 'delivered') });
  assert.equal(client.order('o1').status, 'delivered');
});

test('orders() is a copy; order entries are frozen', () => {
  const { client, WS } = setup();
  client.connect();
  const ws = handshake(WS);
  ws.receive({ type: 'event', cursor: '1', event: orderEvent('o1', 1, 'pending') });
  const map = client.orders();
  map.delete('o1');
  assert.equal(client.orders().size, 1);
  assert.throws(() => {
    client.order('o1').status = 'hacked'; // modules are strict: writing a frozen object throws
  }, TypeError);
});

// ---- listeners ----------------------------------------------------------------------

test('onOrder only reports its order and unsubscribes', () => {
  const { client, WS } = setup();
  client.connect();
  const ws = handshake(WS);
  const got = [];
  const off = client.onOrder('o1', (c) => got.push(c.order.status));
  ws.receive({ type: 'event', cursor: '1', event: orderEvent('o1', 1, 'pending') });
  ws.receive({ type: 'event', cursor: '2', event: orderEvent('o2', 1, 'pending') });
  ws.receive({ type: 'event', cursor: '3', event: orderEvent('o1', 2, 'confirmed') });
  off();
  ws.receive({ type: 'event', cursor: '4', event: orderEvent('o1', 3, 'shipped') });
  assert.deepEqual(got, ['pending', 'confirmed']);
});

test('on() returns an unsubscribe function', () => {
  const { client, WS } = setup();
  const got = [];
  const off = client.on('state', (s) => got.push(s.state));
  client.connect();
  off();
  handshake(WS);
  assert.deepEqual(got, ['connecting']);
});

test('a throwing listener does not break the client or other listeners', async () => {
  const { client, WS } = setup();
  const thrown = [];
  const onUncaught = (err) => thrown.push(err);
  process.prependListener('uncaughtException', onUncaught);
  const originals = process.listeners('uncaughtException').filter((l) => l !== onUncaught);
  for (const l of originals) process.removeListener('uncaughtException', l);
  try {
    client.on('event', () => {
      throw new Error('boom');
    });
    const got = [];
    client.on('event', (e) => got.push(e.event_id));
    client.connect();
    const ws = handshake(WS);
    ws.receive({ type: 'event', cursor: '1', event: orderEvent('o1', 1, 'pending') });
    assert.equal(got.length, 1);
    assert.equal(client.order('o1').status, 'pending');
    await flush();
    assert.equal(thrown.length, 1);
    assert.equal(thrown[0].message, 'boom');
  } finally {
    process.removeListener('uncaughtException', onUncaught);
    for (const l of originals) process.on('uncaughtException', l);
  }
});

// ---- robustness -----------------------------------------------------------------------

test('unknown message types, unknown fields and non-JSON frames are ignored', () => {
  const { client, WS, seen } = setup();
  client.connect();
  const ws = handshake(WS, { future_field: true });
  ws.receive({ type: 'presence', users: 3 });
  ws.receive('not json {');
  ws.receive('42');
  ws.receive({ type: 'event', cursor: '1', event: 'not an object' });
  ws.receive({ type: 'snapshot', orders: 'nope', cursor: '2' });
  assert.equal(client.state, 'open');
  assert.equal(seen.error.length, 0);
  assert.equal(seen.event.length, 0);
  assert.equal(seen.message.at(-1).type, 'snapshot', 'raw messages are still offered');
  assert.ok(seen.message.some((m) => m.type === 'presence'));
  ws.receive({ type: 'event', cursor: '3', event: orderEvent('o1', 1, 'pending', { brand_new: 1 }) });
  assert.equal(seen.event.length, 1, 'still processing after junk');
  assert.equal(seen.event[0].brand_new, 1);
});

test('server error messages are emitted as non-fatal errors', () => {
  const { client, WS, seen } = setup();
  client.connect();
  const ws = handshake(WS);
  ws.receive({ type: 'error', code: 'bad_message', message: 'unknown type' });
  assert.equal(seen.error.length, 1);
  assert.equal(seen.error[0].code, 'bad_message');
  assert.equal(seen.error[0].message, 'unknown type');
  assert.equal(seen.error[0].fatal, false);
  assert.equal(client.state, 'open');
});

test('reconnect() drops the socket and dials at once', () => {
  const { client, WS } = setup();
  client.connect();
  const ws = handshake(WS);
  client.reconnect();
  assert.equal(ws.closedWith, 1000);
  assert.equal(WS.instances.length, 2);
  assert.equal(client.state, 'connecting');
});

// ---- storage and user changes -----------------------------------------------------------

function memoryStorage() {
  const data = new Map();
  return { data, getItem: (k) => data.get(k) ?? null, setItem: (k, v) => data.set(k, String(v)) };
}

test('storage keeps cursor and orders across clients (page reloads)', () => {
  const storage = memoryStorage();
  const a = setup({ storage });
  a.client.connect();
  const ws = handshake(a.WS);
  ws.receive({ type: 'snapshot', cursor: '10', orders: [{ order_id: 'o1', status: 'pending', version: 1 }] });
  ws.receive({ type: 'event', cursor: '11', event: orderEvent('o1', 2, 'confirmed') });
  a.client.close();
  assert.ok(storage.data.has('orderpush'));

  const b = setup({ storage });
  assert.equal(b.client.cursor, '11');
  assert.equal(b.client.order('o1').status, 'confirmed');
  b.client.connect();
  b.WS.last.open();
  assert.equal(b.WS.last.sent[0].cursor, '11');
  b.WS.last.receive(welcome());
  b.WS.last.receive({ type: 'event', cursor: '12', event: orderEvent('o1', 2, 'confirmed') });
  assert.equal(b.seen.event.length, 0, 'versions from storage still dedupe');
});

test("another user's token never resumes the stored cursor", () => {
  const storage = memoryStorage();
  const a = setup({ storage });
  a.client.connect();
  const ws = handshake(a.WS);
  ws.receive({ type: 'snapshot', cursor: '10', orders: [{ order_id: 'o1', status: 'pending', version: 1 }] });
  a.client.close();

  const b = setup({ storage, token: jwt({ sub: 'bob', exp: 1_700_000_000 + 3600 }) });
  b.client.connect();
  b.WS.last.open();
  assert.equal('cursor' in b.WS.last.sent[0], false);
  assert.equal(b.client.orders().size, 0);
  assert.equal(b.seen.orders.at(-1).size, 0, 'views are told the orders are gone');
});

test('an opaque token keeps resuming; a welcome for another user starts over without the cursor', () => {
  const storage = memoryStorage();
  const a = setup({ storage, token: 'opaque' });
  a.client.connect();
  let ws = handshake(a.WS);
  ws.receive({ type: 'snapshot', cursor: '10', orders: [{ order_id: 'o1', status: 'pending', version: 1 }] });
  ws.serverClose(1006);
  a.clock.advance(100);
  a.WS.last.open();
  assert.equal(a.WS.last.sent[0].cursor, '10', 'same user: resume');
  a.client.close();

  const b = setup({ storage, token: 'opaque-bob' });
  b.client.connect();
  ws = b.WS.last;
  ws.open();
  assert.equal(ws.sent[0].cursor, '10', 'cannot tell the user from an opaque token');
  ws.receive(welcome({ user_id: 'bob' }));
  assert.equal(ws.closedWith, 1000, "the connection resumed from alice's cursor is dropped");
  assert.equal(b.client.orders().size, 0);
  assert.equal(b.client.cursor, undefined);
  assert.equal(b.WS.instances.length, 2);
  b.WS.last.open();
  assert.equal('cursor' in b.WS.last.sent[0], false);
  b.WS.last.receive(welcome({ user_id: 'bob' }));
  assert.equal(b.client.state, 'open');
  assert.equal(b.client.userId, 'bob');
});

test('without a token (cookie auth) no auth is sent; the cursor goes in resume after welcome', () => {
  const { client, WS } = setup({ token: undefined, cursor: '77' });
  client.connect();
  WS.last.open();
  assert.deepEqual(WS.last.sent, []);
  WS.last.receive(welcome());
  assert.deepEqual(WS.last.sent, [{ type: 'resume', cursor: '77' }]);
});

test('the url defaults to /ws on the page origin; protocols are passed when given', () => {
  const WS = fakeWebSocket();
  globalThis.location = { protocol: 'https:', host: 'shop.example:8443' };
  try {
    new OrderpushClient({ token: 't', WebSocket: WS, protocols: ['orderpush.v1'] }).connect().close();
  } finally {
    delete globalThis.location;
  }
  assert.equal(WS.last.url, 'wss://shop.example:8443/ws');
  assert.deepEqual(WS.last.protocols, ['orderpush.v1']);
});
