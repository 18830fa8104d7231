// Keeps orderpush.d.ts in step with orderpush.js: same exports, same class
// members, same event names, same options.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as client from '../static/orderpush.js';

const js = readFileSync(new URL('../static/orderpush.js', import.meta.url), 'utf8');
const dts = readFileSync(new URL('../static/orderpush.d.ts', import.meta.url), 'utf8');

/** The body of `interface|class NAME { ... }` in the .d.ts (no nested braces in these). */
function block(kind, name) {
  const m = dts.match(new RegExp(`${kind} ${name}[^{]*\\{([^}]*)\\n\\}`));
  assert.ok(m, `${kind} ${name} not found in orderpush.d.ts`);
  return m[1].replace(/\/\*\*[\s\S]*?\*\//g, '');
}

const sorted = (xs) => [...new Set(xs)].sort();

test('the .d.ts declares exactly the runtime exports', () => {
  const declared = [...dts.matchAll(/export declare (?:const|function|class) (\w+)/g)].map((m) => m[1]);
  assert.deepEqual(sorted(declared), sorted(Object.keys(client)));
});

test('the .d.ts declares exactly the public members of OrderpushClient', () => {
  const body = block('export declare class', 'OrderpushClient');
  const declared = [...body.matchAll(/^\s+(?:readonly )?(\w+)[(<:]/gm)].map((m) => m[1]).filter((n) => n !== 'constructor');
  const actual = Object.getOwnPropertyNames(client.OrderpushClient.prototype).filter((n) => n !== 'constructor');
  assert.deepEqual(sorted(declared), sorted(actual));
});

test('OrderpushEventMap names exactly the events the client emits', () => {
  const declared = [...block('export interface', 'OrderpushEventMap').matchAll(/^\s+(\w+):/gm)].map((m) => m[1]);
  const emitted = [...js.matchAll(/#(?:emit|set)\('(\w+)'/g)].map((m) => (m[0].startsWith('#set') ? 'state' : m[1]));
  assert.deepEqual(sorted(declared), sorted(emitted));
});

test('OrderpushOptions names exactly the options the client reads', () => {
  const declared = [...block('export interface', 'OrderpushOptions').matchAll(/^\s+(\w+)\??:/gm)].map((m) => m[1]);
  const read = [
    ...[...js.matchAll(/(?:this\.#o|options)\.(\w+)/g)].map((m) => m[1]),
    ...[...js.matchAll(/const \{([^}]+)\} = this\.#o(?!\.)/g)].flatMap((m) => m[1].split(',').map((s) => s.trim())),
    ...[...js.matchAll(/^ {6}(\w+): /gm)].map((m) => m[1]), // defaults in the constructor
    'orders', // read as saved.orders where saved = options
  ];
  assert.deepEqual(sorted(declared), sorted(read));
});
