// Client events: who may send them, where they go, and the limits (§7).
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const h = require('./helpers');

let srv;
test.before(async () => { srv = await h.startServer(); });
test.after(async () => { await srv.stop(); });

test('client events reach the other subscribers and are not echoed', async () => {
  const a = h.client(srv.port);
  const b = h.client(srv.port);
  const c = h.client(srv.port);
  const [ca, cb, cc] = await Promise.all(['private-chat', 'private-chat', 'private-chat'].map((n, i) => h.subscribed([a, b, c][i], n)));
  const noEcho = h.never(ca, 'client-msg', 300);
  const got = Promise.all([h.once(cb, 'client-msg'), h.once(cc, 'client-msg')]);
  assert.ok(ca.trigger('client-msg', { text: 'hi' }));
  assert.deepEqual(await got, [{ text: 'hi' }, { text: 'hi' }]);
  await noEcho;
  [a, b, c].forEach((p) => p.disconnect());
});

test('client event data keeps its JSON type', async () => {
  const a = h.raw(srv.port);
  const b = h.raw(srv.port);
  const sdk = h.server(srv.port);
  for (const c of [a, b]) {
    const sid = await c.socketId();
    c.send({ event: 'pusher:subscribe', data: { channel: 'private-types', auth: sdk.authorizeChannel(sid, 'private-types').auth } });
    await c.event('pusher_internal:subscription_succeeded');
  }
  a.send({ event: 'client-s', channel: 'private-types', data: 'a string' });
  a.send({ event: 'client-o', channel: 'private-types', data: { n: [1, 2] } });
  assert.equal((await b.event('client-s')).data, 'a string');
  assert.deepEqual((await b.event('client-o')).data, { n: [1, 2] });
  a.ws.close();
  b.ws.close();
});

test('on presence channels client events carry the sender user_id', async () => {
  const a = h.client(srv.port, { presence: { user_id: 'alice' } });
  const b = h.client(srv.port, { presence: { user_id: 'bob' } });
  const [ca, cb] = await Promise.all([h.subscribed(a, 'presence-room'), h.subscribed(b, 'presence-room')]);
  const got = h.once(cb, 'client-wave');
  ca.trigger('client-wave', { hi: 1 });
  const meta = await new Promise((resolve) => cb.bind('client-wave', (_d, m) => resolve(m)));
  assert.equal(meta.user_id, 'alice');
  await got;
  a.disconnect();
  b.disconnect();
});

async function rawSubscribed(port, key, channel, app) {
  const c = h.raw(port, key);
  const sid = await c.socketId();
  // Signed by hand: the SDK refuses encrypted channels without a master key, the server needs none.
  const sig = require('node:crypto').createHmac('sha256', app.secret).update(`${sid}:${channel}`).digest('hex');
  const auth = channel.startsWith('private-') ? `${app.key}:${sig}` : '';
  c.send({ event: 'pusher:subscribe', data: { channel, auth } });
  await c.event('pusher_internal:subscription_succeeded');
  return c;
}

test('client events on public channels, unsubscribed channels or with bad names are refused with 4301', async () => {
  const c = await rawSubscribed(srv.port, 'app-key', 'public-room', h.APPS.main);
  c.send({ event: 'client-x', channel: 'public-room', data: {} });
  assert.equal((await c.event('pusher:error')).data.code, 4301);
  c.send({ event: 'client-x', channel: 'private-never-joined', data: {} });
  assert.equal((await c.event('pusher:error')).data.code, 4301);
  c.send({ event: `client-${'x'.repeat(300)}`, channel: 'public-room', data: {} });
  assert.equal((await c.event('pusher:error')).data.code, 4301);
  assert.equal(c.ws.readyState, 1, 'the connection stays open');
  c.ws.close();
});

test('client events on encrypted channels are refused', async () => {
  const c = await rawSubscribed(srv.port, 'app-key', 'private-encrypted-x', h.APPS.main);
  c.send({ event: 'client-x', channel: 'private-encrypted-x', data: {} });
  assert.equal((await c.event('pusher:error')).data.code, 4301);
  c.ws.close();
});

test('an app with client events off refuses them', async () => {
  const c = await rawSubscribed(srv.port, 'noclient-key', 'private-a', h.APPS.noclient);
  c.send({ event: 'client-x', channel: 'private-a', data: {} });
  const e = await c.event('pusher:error');
  assert.equal(e.data.code, 4301);
  assert.match(e.data.message, /disabled/);
  c.ws.close();
});

test('the per-connection rate limit rejects the excess only', async () => {
  // The small app allows 2 client events per second.
  const a = await rawSubscribed(srv.port, 'small-key', 'private-rate', h.APPS.small);
  const b = await rawSubscribed(srv.port, 'small-key', 'private-rate', h.APPS.small);
  for (let i = 0; i < 5; i++) a.send({ event: 'client-n', channel: 'private-rate', data: { i } });
  await h.sleep(300);
  const delivered = b.inbox.filter((m) => m.event === 'client-n').length;
  const rejected = a.inbox.filter((m) => m.event === 'pusher:error' && m.data.code === 4301).length;
  assert.equal(delivered, 2);
  assert.equal(rejected, 3);
  await h.sleep(1100);
  a.send({ event: 'client-n', channel: 'private-rate', data: { i: 9 } });
  assert.deepEqual((await b.next((m) => m.event === 'client-n' && m.data.i === 9)).data, { i: 9 });
  a.ws.close();
  b.ws.close();
});

test('client event payloads over the limit are refused', async () => {
  const a = await rawSubscribed(srv.port, 'small-key', 'private-big', h.APPS.small);
  a.send({ event: 'client-big', channel: 'private-big', data: 'x'.repeat(200) });
  const e = await a.event('pusher:error');
  assert.equal(e.data.code, 4301);
  assert.match(e.data.message, /exceeds/);
  a.ws.close();
});
