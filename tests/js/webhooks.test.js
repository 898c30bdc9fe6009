// Webhooks: which events fire, when, signed how, and the leave debounce (§12).
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const h = require('./helpers');

let srv;
let hooks;
let api;
test.before(async () => {
  hooks = await h.hookServer();
  srv = await h.startServer({ hookPort: hooks.port });
  api = h.server(srv.port);
});
test.after(async () => {
  await srv.stop();
  await hooks.close();
});

const named = (name, channel) => (e) => e.name === name && e.channel === channel;

test('channel_occupied and channel_vacated fire once per channel', async () => {
  const a = h.client(srv.port);
  const b = h.client(srv.port);
  await h.subscribed(a, 'hooked');
  await h.subscribed(b, 'hooked');
  await hooks.waitFor(named('channel_occupied', 'hooked'));
  a.disconnect();
  b.disconnect();
  await hooks.waitFor(named('channel_vacated', 'hooked'));
  assert.equal(hooks.events.filter(named('channel_occupied', 'hooked')).length, 1);
  assert.equal(hooks.events.filter(named('channel_vacated', 'hooked')).length, 1);
  assert.deepEqual(hooks.bad, [], 'every webhook was signed with the app secret');
});

test('a quick re-join inside the leave delay sends neither vacated nor a second occupied', async () => {
  const a = h.client(srv.port);
  await h.subscribed(a, 'flappy');
  await hooks.waitFor(named('channel_occupied', 'flappy'));
  a.unsubscribe('flappy');
  await h.sleep(50);
  await h.subscribed(a, 'flappy');
  await h.sleep(600);
  assert.equal(hooks.events.filter(named('channel_vacated', 'flappy')).length, 0);
  assert.equal(hooks.events.filter(named('channel_occupied', 'flappy')).length, 1);
  a.disconnect();
  await hooks.waitFor(named('channel_vacated', 'flappy'));
});

test('member_added and member_removed fire once per user', async () => {
  const a1 = h.client(srv.port, { presence: { user_id: 'hooky' } });
  const a2 = h.client(srv.port, { presence: { user_id: 'hooky' } });
  await h.subscribed(a1, 'presence-hooks');
  await h.subscribed(a2, 'presence-hooks');
  const added = await hooks.waitFor(named('member_added', 'presence-hooks'));
  assert.equal(added.user_id, 'hooky');
  a1.disconnect();
  a2.disconnect();
  const removed = await hooks.waitFor(named('member_removed', 'presence-hooks'));
  assert.equal(removed.user_id, 'hooky');
  await h.sleep(100);
  assert.equal(hooks.events.filter(named('member_added', 'presence-hooks')).length, 1);
  assert.equal(hooks.events.filter(named('member_removed', 'presence-hooks')).length, 1);
});

test('client_event carries event, data, socket_id and user_id', async () => {
  const a = h.client(srv.port, { presence: { user_id: 'talker' } });
  const ch = await h.subscribed(a, 'presence-talk');
  ch.trigger('client-said', { words: 'hello' });
  const e = await hooks.waitFor(named('client_event', 'presence-talk'));
  assert.equal(e.event, 'client-said');
  assert.deepEqual(JSON.parse(e.data), { words: 'hello' });
  assert.equal(e.socket_id, a.connection.socket_id);
  assert.equal(e.user_id, 'talker');
  a.disconnect();
});

test('cache_miss fires when a cache channel has nothing yet', async () => {
  const a = h.client(srv.port);
  a.subscribe('cache-hooked');
  await hooks.waitFor(named('cache_miss', 'cache-hooked'));
  await api.trigger('cache-hooked', 'e', '1');
  a.disconnect();
});

test('subscription_count webhooks report the count', async () => {
  const a = h.client(srv.port);
  await h.subscribed(a, 'counted-hook');
  const e = await hooks.waitFor(named('subscription_count', 'counted-hook'));
  assert.equal(e.subscription_count, 1);
  a.disconnect();
});

test('a failing endpoint is retried until it accepts', async () => {
  let calls = 0;
  const http = require('node:http');
  const got = [];
  const flaky = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      calls++;
      if (calls < 2) { res.writeHead(500); return res.end(); }
      got.push(...JSON.parse(body).events);
      res.writeHead(200);
      res.end();
    });
  });
  await new Promise((r) => flaky.listen(0, '127.0.0.1', r));
  const s = await h.startServer({ hookPort: flaky.address().port });
  try {
    const a = h.client(s.port);
    await h.subscribed(a, 'retry-me');
    const deadline = Date.now() + 5000;
    while (!got.some(named('channel_occupied', 'retry-me')) && Date.now() < deadline) await h.sleep(50);
    assert.ok(got.some(named('channel_occupied', 'retry-me')), `calls: ${calls}`);
    assert.ok(calls >= 2);
    a.disconnect();
  } finally {
    await s.stop();
    flaky.close();
  }
});
