// Public, private, encrypted and cache channels through pusher-js and the pusher SDK (§5, §9, §13).
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const h = require('./helpers');

let srv;
let api;
test.before(async () => {
  srv = await h.startServer();
  api = h.server(srv.port);
});
test.after(async () => { await srv.stop(); });

test('an HTTP publish reaches every subscriber with its data', async () => {
  const a = h.client(srv.port);
  const b = h.client(srv.port);
  const [ca, cb] = await Promise.all([h.subscribed(a, 'news'), h.subscribed(b, 'news')]);
  const got = Promise.all([h.once(ca, 'headline'), h.once(cb, 'headline')]);
  const r = await api.trigger('news', 'headline', { title: 'hi', n: 1 });
  assert.equal(r.status, 200);
  assert.deepEqual(await got, [{ title: 'hi', n: 1 }, { title: 'hi', n: 1 }]);
  a.disconnect();
  b.disconnect();
});

test('publishing to several channels reaches each subscriber once, minus the excluded socket', async () => {
  const a = h.client(srv.port);
  const b = h.client(srv.port);
  const [a1, a2, b1, b2] = await Promise.all([
    h.subscribed(a, 'multi-1'), h.subscribed(a, 'multi-2'), h.subscribed(b, 'multi-1'), h.subscribed(b, 'multi-2'),
  ]);
  const quietA = Promise.all([h.never(a1, 'ev', 400), h.never(a2, 'ev', 400)]);
  const gotB = Promise.all([h.once(b1, 'ev'), h.once(b2, 'ev')]);
  await api.trigger(['multi-1', 'multi-2'], 'ev', 'x', { socket_id: a.connection.socket_id });
  assert.deepEqual(await gotB, ['x', 'x']);
  await quietA;
  a.disconnect();
  b.disconnect();
});

test('socket_id exclusion skips only the given socket', async () => {
  const a = h.client(srv.port);
  const b = h.client(srv.port);
  const [ca, cb] = await Promise.all([h.subscribed(a, 'excl'), h.subscribed(b, 'excl')]);
  const quiet = h.never(ca, 'ev', 400);
  const got = h.once(cb, 'ev');
  await api.trigger('excl', 'ev', 'x', { socket_id: a.connection.socket_id });
  assert.equal(await got, 'x');
  await quiet;
  a.disconnect();
  b.disconnect();
});

test('events on one channel arrive in publish order', async () => {
  const a = h.client(srv.port);
  const ch = await h.subscribed(a, 'ordered');
  const seen = [];
  const done = new Promise((r) => ch.bind('n', (d) => { seen.push(d.i); if (seen.length === 100) r(); }));
  for (let i = 0; i < 100; i += 10) {
    await api.triggerBatch(Array.from({ length: 10 }, (_, j) => ({ channel: 'ordered', name: 'n', data: { i: i + j } })));
  }
  await done;
  assert.deepEqual(seen, Array.from({ length: 100 }, (_, i) => i));
  a.disconnect();
});

test('a private channel needs a valid signature', async () => {
  const good = h.client(srv.port);
  const ch = await h.subscribed(good, 'private-room');
  const got = h.once(ch, 'secret');
  await api.trigger('private-room', 'secret', { ok: true });
  assert.deepEqual(await got, { ok: true });

  const forged = h.client(srv.port, { app: { ...h.APPS.main, secret: 'wrong-secret' } });
  const bad = forged.subscribe('private-room');
  const err = await h.once(bad, 'pusher:subscription_error');
  assert.equal(err.status, 401);
  assert.equal(err.type, 'AuthError');
  // The connection survives a failed subscription.
  await h.subscribed(forged, 'public-after');
  good.disconnect();
  forged.disconnect();
});

test('a signature for another socket is refused', async () => {
  const c = h.raw(srv.port);
  await c.socketId();
  const auth = api.authorizeChannel('1.1', 'private-stolen').auth;
  c.send({ event: 'pusher:subscribe', data: { channel: 'private-stolen', auth } });
  const err = await c.event('pusher:subscription_error');
  assert.equal(err.channel, 'private-stolen');
  c.ws.close();
});

test('encrypted channels relay the SDK ciphertext that pusher-js decrypts', async () => {
  const masterKey = crypto.randomBytes(32).toString('base64');
  const enc = h.server(srv.port, h.APPS.main, { encryptionMasterKeyBase64: masterKey });
  const p = h.client(srv.port, {
    extra: {
      channelAuthorization: {
        customHandler: ({ socketId, channelName }, cb) => cb(null, enc.authorizeChannel(socketId, channelName)),
      },
    },
  });
  const ch = await h.subscribed(p, 'private-encrypted-vault');
  const got = h.once(ch, 'doc');
  await enc.trigger('private-encrypted-vault', 'doc', { body: 'secret text' });
  assert.deepEqual(await got, { body: 'secret text' });
  // What crossed the server was ciphertext only.
  const rawc = h.raw(srv.port);
  const sid = await rawc.socketId();
  rawc.send({ event: 'pusher:subscribe', data: { channel: 'private-encrypted-vault', auth: enc.authorizeChannel(sid, 'private-encrypted-vault').auth } });
  await rawc.event('pusher_internal:subscription_succeeded');
  await enc.trigger('private-encrypted-vault', 'doc', { body: 'secret text' });
  const m = await rawc.event('doc');
  assert.ok(!m.data.includes('secret text'));
  assert.ok(JSON.parse(m.data).ciphertext);
  rawc.ws.close();
  p.disconnect();
});

test('cache channels send cache_miss when empty and the last event after a publish', async () => {
  const a = h.client(srv.port);
  const ch = a.subscribe('cache-prices');
  await h.once(ch, 'pusher:cache_miss');
  await api.trigger('cache-prices', 'price', { v: 1 });
  await api.trigger('cache-prices', 'price', { v: 2 });
  const b = h.client(srv.port);
  const late = b.subscribe('cache-prices');
  assert.deepEqual(await h.once(late, 'price'), { v: 2 });
  const info = await (await api.get({ path: '/channels/cache-prices', params: { info: 'cache' } })).json();
  assert.equal(JSON.parse(info.cache.data).v, 2);
  assert.ok(info.cache.ttl > 0);
  a.disconnect();
  b.disconnect();
});

test('client events are never cached', async () => {
  const a = h.client(srv.port);
  const ch = a.subscribe('private-cache-chat');
  await h.once(ch, 'pusher:cache_miss');
  ch.trigger('client-typing', { x: 1 });
  await h.sleep(100);
  const b = h.client(srv.port);
  const late = b.subscribe('private-cache-chat');
  await h.once(late, 'pusher:cache_miss');
  a.disconnect();
  b.disconnect();
});

test('subscription_count is broadcast on non-presence channels', async () => {
  const a = h.client(srv.port);
  const counts = [];
  const ch = a.subscribe('counted');
  // Bound before subscribing: a's own join (count 1) may arrive right after subscription_succeeded.
  ch.bind('pusher:subscription_count', (d) => counts.push(d.subscription_count));
  await h.once(ch, 'pusher:subscription_succeeded');
  const b = h.client(srv.port);
  await h.subscribed(b, 'counted');
  const seen = async (n) => {
    for (let i = 0; i < 100 && counts[counts.length - 1] !== n; i++) await h.sleep(20);
    assert.equal(counts[counts.length - 1], n, `counts so far: ${counts}`);
  };
  await seen(2);
  b.disconnect();
  await seen(1);
  assert.deepEqual(counts, [1, 2, 1]);
  a.disconnect();
});

test('subscribing twice is harmless and unsubscribing stops delivery', async () => {
  const c = h.raw(srv.port);
  await c.socketId();
  c.send({ event: 'pusher:subscribe', data: { channel: 'twice' } });
  c.send({ event: 'pusher:subscribe', data: { channel: 'twice' } });
  await c.event('pusher_internal:subscription_succeeded');
  await c.event('pusher_internal:subscription_succeeded');
  await api.trigger('twice', 'e', '1');
  await c.event('e');
  await h.sleep(50);
  assert.equal(c.inbox.filter((m) => m.event === 'e').length, 0, 'delivered once, not twice');
  c.send({ event: 'pusher:unsubscribe', data: { channel: 'twice' } });
  c.send({ event: 'pusher:unsubscribe', data: { channel: 'twice' } });
  await h.sleep(50);
  await api.trigger('twice', 'e', '2');
  await h.sleep(200);
  assert.equal(c.inbox.filter((m) => m.event === 'e').length, 0);
  c.ws.close();
});

test('invalid channel names get a subscription_error', async () => {
  const c = h.raw(srv.port);
  await c.socketId();
  for (const channel of ['has space', '#reserved', 'x'.repeat(201), '']) {
    c.send({ event: 'pusher:subscribe', data: { channel } });
    const e = await c.event('pusher:subscription_error');
    assert.equal(e.data.status, 400);
  }
  c.ws.close();
});
