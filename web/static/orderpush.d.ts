/**
 * Types of the Orderpush client (`orderpush.js`), the `orderpush.v1`
 * WebSocket protocol of docs/protocol.md section 2.
 */

/** `closed` before `connect()` and after `close()` or a fatal close code. */
export type ConnectionState = 'connecting' | 'open' | 'reconnecting' | 'closed';

/** Reconnect delay: `random(0, min(maxMs, initialMs * factor ** attempt))` (full jitter). */
export interface Backoff {
  initialMs: number;
  maxMs: number;
  factor: number;
}

/** `{ initialMs: 500, maxMs: 30000, factor: 2 }` */
export declare const DEFAULT_BACKOFF: Readonly<Backoff>;

/**
 * The protocol's dedupe rule: true when `cursor` comes after `last`
 * (cursors are `<epoch>-<seq>`, compared as that pair of numbers), or when
 * either is not a cursor. An event whose cursor is not after the last one
 * held is a repeat.
 */
export declare function cursorAfter(cursor: string | undefined, last: string | undefined): boolean;

/** What the client knows about one order. Statuses are open-ended: show unknown ones as they are. */
export interface Order {
  order_id: string;
  status: string;
  version: number;
  updated_at?: string;
  [field: string]: unknown;
}

/** An event of the bus, as pushed by the gateway (unknown fields are kept). */
export interface BusEvent {
  event_id: string;
  /** e.g. `order.confirmed`, `payment.authorized`, `inventory.rejected` */
  type: string;
  order_id: string;
  user_id: string;
  occurred_at: string;
  /** Required on `order.*` events; other events may carry it. */
  status?: string;
  /** Required on `order.*` events; other events may carry it. */
  version?: number;
  data?: Record<string, unknown>;
  [field: string]: unknown;
}

/** Any message of the server, as parsed (the `message` event). */
export interface ServerMessage {
  type: string;
  [field: string]: unknown;
}

export interface WelcomeMessage extends ServerMessage {
  type: 'welcome';
  user_id: string;
  connection_id: string;
  heartbeat_s: number;
}

/** Detail of the `state` event. */
export interface StateChange {
  state: ConnectionState;
  previous: ConnectionState;
  /** Failed attempts since the last `welcome` (0 once open). */
  attempt: number;
  /** On `reconnecting`: the delay before the next attempt. */
  delayMs?: number;
  /** On `reconnecting` or a fatal `closed`: the close code (absent after a timeout). */
  code?: number | string;
  /** On `reconnecting`: the close reason, or `'timeout'` for a dead connection. */
  reason?: string;
}

/** Detail of the `snapshot` event: the orders now known, replacing all before. */
export interface SnapshotInfo {
  orders: Order[];
  cursor: string | undefined;
}

/** Detail of the `resumed` event: missed events were replayed up to `cursor`. */
export interface ResumedInfo {
  replayed: number;
  cursor: string | undefined;
}

/** Detail of the `order` event and of `onOrder` callbacks. */
export interface OrderChange {
  order_id: string;
  /** The order's state now; undefined when not known (or gone after a snapshot). */
  order: Order | undefined;
  /** The accepted event that caused the change; absent for a snapshot. */
  event?: BusEvent;
}

/** Detail of the `error` event. */
export interface OrderpushError extends Error {
  /** A close code (4001, 4003), the server's error code, `'token'` or `'connect'`. */
  code: number | string | undefined;
  /** True when the client gave up and is now `closed`. */
  fatal: boolean;
}

export interface OrderpushEventMap {
  state: StateChange;
  welcome: WelcomeMessage;
  snapshot: SnapshotInfo;
  event: BusEvent;
  order: OrderChange;
  orders: Map<string, Order>;
  resumed: ResumedInfo;
  error: OrderpushError;
  message: ServerMessage;
}

/** The part of a WebSocket the client uses: the browser's, Node's or the `ws` package's. */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: any) => void) | null;
  onmessage: ((event: any) => void) | null;
  onclose: ((event: any) => void) | null;
  onerror: ((event: any) => void) | null;
}

export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

/** `localStorage`, `sessionStorage` or anything with the same two methods. */
export interface StorageLike {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
}

export interface OrderpushOptions {
  /** Gateway endpoint. Default: `/ws` on the page's origin (`ws:` or `wss:`). */
  url?: string;
  /** A JWT. Without `token` and `getToken` no `auth` is sent (cookie or `?token=` auth). */
  token?: string;
  /** Get a fresh JWT: before a (re)connect when the token is missing or near its `exp`, after close code 4001, and while open shortly before `exp`. */
  getToken?: () => string | Promise<string>;
  /** WebSocket constructor. Default: `globalThis.WebSocket`. */
  WebSocket?: WebSocketConstructor;
  /** Subprotocols to offer, e.g. `'orderpush.v1'`. Default: none. */
  protocols?: string | string[];
  /** Resume from this cursor (with `orders` as the state it goes with). Overrides `storage`. */
  cursor?: string;
  /** The orders known at `cursor`. */
  orders?: Order[];
  /** Reconnect backoff; unspecified fields keep `DEFAULT_BACKOFF`. */
  backoff?: Partial<Backoff>;
  /** Silence after which an open connection is dead. Default: 2.5 × `heartbeat_s` of `welcome`. */
  heartbeatTimeoutMs?: number;
  /** Time allowed from dialing (including `getToken`) to `welcome`. Default: 15000. */
  connectTimeoutMs?: number;
  /** Refresh the token when it expires within this. Default: 30000. */
  tokenMarginMs?: number;
  /** Keeps user, cursor and orders across page loads (e.g. `sessionStorage`). */
  storage?: StorageLike;
  /** Key under which `storage` keeps them. Default: `'orderpush'`. */
  storageKey?: string;
  /** For tests: timer functions, randomness for the jitter, and the clock. */
  setTimeout?: (callback: () => void, ms: number) => unknown;
  clearTimeout?: (id: any) => void;
  random?: () => number;
  now?: () => number;
}

export declare class OrderpushClient {
  /** Creates a client in state `closed`; call `connect()` to start. */
  constructor(options?: OrderpushOptions);
  readonly state: ConnectionState;
  /** The last cursor seen; sent in `auth` on reconnect. */
  readonly cursor: string | undefined;
  /** The user of the last `welcome` (or from `storage`). */
  readonly userId: string | undefined;
  /** A copy of the known orders, by `order_id`. */
  orders(): Map<string, Order>;
  /** The known state of one order. */
  order(orderId: string): Order | undefined;
  /** Listen to an event; returns a function that unsubscribes. */
  on<K extends keyof OrderpushEventMap>(name: K, callback: (detail: OrderpushEventMap[K]) => void): () => void;
  /** Listen to changes and events of one order; returns a function that unsubscribes. */
  onOrder(orderId: string, callback: (change: OrderChange) => void): () => void;
  /** Start connecting (does nothing unless `closed`). Throws a TypeError without a WebSocket. */
  connect(): this;
  /** Drop the connection and dial again at once (e.g. on the browser's `online` event). */
  reconnect(): void;
  /** Stop for good: close the socket, cancel every timer, no more reconnects. */
  close(): void;
}

/** `new OrderpushClient(options).connect()` */
export declare function connect(options?: OrderpushOptions): OrderpushClient;

/** The claims of a JWT, decoded without verification; `{}` if it is not a JWT. */
export declare function decodeJwt(token: string): Record<string, any>;
