// The client over a real WebSocket (Node's built-in one) against a tiny
// WebSocket server written here with node:http, so that what the fakes in
// client.test.mjs assume (string frames, close codes, close()) is checked on
// the wire. Node 20 only has a global WebSocket behind --experimental-websocket:
// there this file re-runs itself in a child process with that flag.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createServer } from 'node:http';
import { fileURLToPath } from 'node:url';
import { OrderpushClient } from '../static/orderpush.js';

const TIMEOUT_MS = 5000;

/** Resolve with the first value pushed, or fail after TIMEOUT_MS. */
function bounded(promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), TIMEOUT_MS);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** An async queue: push() values, next() waits for one. */
function queue() {
  const items = [];
  const waiters = [];
  return {
    push(x) {
      const w = waiters.shift();
      if (w) w(x);
      else items.push(x);
    },
    next(what = 'item') {
      return bounded(items.length ? Promise.resolve(items.shift()) : new Promise((r) => waiters.push(r)), what);
    },
  };
}

/** One server-side WebSocket connection (RFC 6455, text and close frames only). */
class ServerConn {
  messages = queue();
  #buf = Buffer.alloc(0);
  constructor(socket, req) {
    this.socket = socket;
    this.req = req;
    socket.on('data', (data) => this.#read(data));
    socket.on('error', () => {});
  }
  #frame(opcode, payload) {
    const n = payload.length;
    const head = n < 126 ? Buffer.from([0x80 | opcode, n]) : Buffer.from([0x80 | opcode, 126, n >> 8, n & 255]);
    if (!this.socket.destroyed) this.socket.write(Buffer.concat([head, payload]));
  }
  #read(data) {
    this.#buf = Buffer.concat([this.#buf, data]);
    for (;;) {
      const b = this.#buf;
      if (b.length < 2) return;
      let len = b[1] & 127;
      let off = 2;
      if (len === 126) {
        if (b.length < 4) return;
        len = b.readUInt16BE(2);
        off = 4;
      } else if (len === 127) {
        if (b.length < 10) return;
        len = Number(b.readBigUInt64BE(2));
        off = 10;
      }
      if (b.length < off + 4 + len) return;
      const mask = b.subarray(off, off + 4);
      const payload = Buffer.from(b.subarray(off + 4, off + 4 + len)).map((x, i) => x ^ mask[i % 4]);
      this.#buf = b.subarray(off + 4 + len);
      const opcode = b[0] & 15;
      if (opcode === 1) this.messages.push(JSON.parse(payload.toString('utf8')));
      else if (opcode === 8) {
        this.clientCloseCode = payload.length >= 2 ? payload.readUInt16BE(0) : 1005;
        this.#frame(8, payload.subarray(0, 2));
        this.socket.end();
      }
    }
  }
  send(msg) {
    this.#frame(1, Buffer.from(JSON.stringify(msg)));
  }
  close(code, reason = '') {
    const payload = Buffer.alloc(2);
    payload.writeUInt16BE(code);
    this.#frame(8, Buffer.concat([payload, Buffer.from(reason)]));
    this.socket.end();
  }
  /** Cut the TCP connection without a close frame (the client sees 1006). */
  kill() {
    this.socket.destroy();
  }
  next(what = 'a client message') {
    return this.messages.next(what);
  }
}

async function startServer() {
  const connections = queue();
  const sockets = new Set();
  const server = createServer((req, res) => res.writeHead(404).end());
  server.on('upgrade', (req, socket) => {
    sockets.add(socket);
    const accept = createHash('sha1')
      .update(`${req.headers['sec-websocket-key']}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`)
      .digest('base64');
    socket.write(
      `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`,
    );
    connections.push(new ServerConn(socket, req));
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `ws://127.0.0.1:${server.address().port}/ws`,
    next: () => connections.next('a connection'),
    async stop() {
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/** Wait for the client to emit `name` (matching `pred`). */
function once(client, name, pred = () => true) {
  return bounded(
    new Promise((resolve) => {
      const off = client.on(name, (x) => {
        if (pred(x)) {
          off();
          resolve(x);
        }
      });
    }),
    `client ${name}`,
  );
}

const welcome = { type: 'welcome', user_id: 'alice', connection_id: 'c', heartbeat_s: 30 };
const event = (cursor, version, status) => ({
  type: 'event',
  cursor,
  event: {
    event_id: `e${version}`,
    type: `order.${status}`,
    order_id: 'o1',
    user_id: 'alice',
    occurred_at: '2026-11-27T15:46:00.123Z',
    status,
    version,
    data: {},
  },
});

if (!globalThis.WebSocket) {
  test('real sockets (re-run with --experimental-websocket on Node 20)', () => {
    const env = { ...process.env };
    delete env.NODE_TEST_CONTEXT; // report in TAP to us, not to the parent runner
    const args = ['--experimental-websocket', '--no-warnings', '--test-reporter=tap', fileURLToPath(import.meta.url)];
    const child = spawnSync(process.execPath, args, { encoding: 'utf8', timeout: 60_000, env });
    assert.equal(child.status, 0, `child failed:\n${child.stdout}\n${child.stderr}`);
    assert.match(child.stdout, /# pass [1-9]/);
    assert.match(child.stdout, /# fail 0/);
  });
} else {
  const options = (server, extra) => ({
    url: server.url,
    token: 'tok-1',
    backoff: { initialMs: 10, maxMs: 50, factor: 2 },
    ...extra,
  });

  test('resumes from the last cursor after the connection drops', async () => {
    const server = await startServer();
    const client = new OrderpushClient(options(server));
    const states = [];
    client.on('state', (s) => states.push(s.state));
    try {
      client.connect();
      let conn = await server.next();
      assert.deepEqual(await conn.next(), { type: 'auth', token: 'tok-1' });
      conn.send(welcome);
      conn.send({ type: 'snapshot', cursor: '1-0', orders: [{ order_id: 'o1', status: 'pending', version: 1, updated_at: 'x' }] });
      conn.send(event('2-0', 2, 'confirmed'));
      await once(client, 'event');
      conn.kill();

      conn = await server.next();
      assert.deepEqual(await conn.next(), { type: 'auth', token: 'tok-1', cursor: '2-0' });
      const resumed = once(client, 'resumed');
      conn.send(welcome);
      conn.send(event('2-0', 2, 'confirmed')); // overlap: dropped
      conn.send(event('3-0', 3, 'shipped'));
      conn.send({ type: 'resumed', replayed: 2, cursor: '3-0' });
      assert.deepEqual(await resumed, { replayed: 2, cursor: '3-0' });
      assert.equal(client.order('o1').status, 'shipped');
      assert.deepEqual(states, ['connecting', 'open', 'reconnecting', 'connecting', 'open']);
    } finally {
      client.close();
      await server.stop();
    }
  });

  test('close codes on the wire: 4001 refreshes the token, 4003 closes for good', async () => {
    const server = await startServer();
    let n = 0;
    const client = new OrderpushClient(options(server, { token: undefined, getToken: async () => `tok-${++n}` }));
    try {
      client.connect();
      let conn = await server.next();
      assert.equal((await conn.next()).token, 'tok-1');
      conn.close(4001, 'token expired');
      conn = await server.next();
      assert.equal((await conn.next()).token, 'tok-2');
      const closed = once(client, 'state', (s) => s.state === 'closed');
      const error = once(client, 'error');
      conn.close(4003, 'origin not allowed');
      assert.equal((await closed).code, 4003);
      assert.equal((await error).fatal, true);
      await new Promise((r) => setTimeout(r, 200)); // backoff would have fired by now
      assert.equal(client.state, 'closed');
    } finally {
      client.close();
      await server.stop();
    }
  });

  test('a silent server is detected by the heartbeat watchdog; close() sends a close frame', async () => {
    const server = await startServer();
    const client = new OrderpushClient(options(server, { heartbeatTimeoutMs: 300 }));
    try {
      client.connect();
      const first = await server.next();
      await first.next();
      first.send(welcome); // then nothing at all
      const second = await server.next(); // the client gave up on the first one
      assert.equal(first.clientCloseCode, 1000);
      await second.next();
      second.send(welcome);
      await once(client, 'state', (s) => s.state === 'open');
      client.close();
      await bounded(new Promise((r) => second.socket.on('close', r)), 'socket close');
      assert.equal(second.clientCloseCode, 1000);
    } finally {
      client.close();
      await server.stop();
    }
  });
}
