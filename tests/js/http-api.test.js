// The HTTP API through the pusher SDK and hand-signed requests (§11).
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

/// Signs a request by hand, optionally tampering with parts.
function signed(method, path, body = '', { secret = 'app-secret', key = 'app-key', ts = Math.floor(Date.now() / 1000), extra = {} } = {}) {
  const params = { auth_key: key, auth_timestamp: String(ts), auth_version: '1.0', ...extra };
  if (body) params.body_md5 = crypto.createHash('md5').update(body).digest('hex');
  const query = Object.keys(params).sort().map((k) => `${k}=${params[k]}`).join('&');
  const sig = crypto.createHmac('sha256', secret).update(`${method}\n${path}\n${query}`).digest('hex');
  const url = `http://127.0.0.1:${srv.port}${path}?${query}&auth_signature=${sig}`;
  return fetch(url, { method, body: body || undefined, headers: body ? { 'content-type': 'application/json' } : {} });
}

test('GET channels lists occupied channels with filter and user_count', async () => {
  const a = h.client(srv.port, { presence: { user_id: 'p1' } });
  const b = h.client(srv.port, { presence: { user_id: 'p2' } });
  await Promise.all([h.subscribed(a, 'presence-one'), h.subscribed(b, 'presence-one'), h.subscribed(a, 'plain-one')]);
  const all = await (await api.get({ path: '/channels' })).json();
  assert.deepEqual(Object.keys(all.channels).sort(), ['plain-one', 'presence-one']);
  const pres = await (await api.get({ path: '/channels', params: { filter_by_prefix: 'presence-', info: 'user_count' } })).json();
  assert.deepEqual(pres.channels, { 'presence-one': { user_count: 2 } });
  const bad = await api.get({ path: '/channels', params: { info: 'user_count' } }).catch((e) => e);
  assert.equal(bad.status, 400);
  a.disconnect();
  b.disconnect();
  await h.sleep(100);
  const none = await (await api.get({ path: '/channels' })).json();
  assert.deepEqual(none.channels, {}, 'channel lists are current, not cached');
});

test('GET channel reports occupied, counts, and refuses misplaced attributes', async () => {
  const a = h.client(srv.port, { presence: { user_id: 'x' } });
  const a2 = h.client(srv.port, { presence: { user_id: 'x' } });
  await Promise.all([h.subscribed(a, 'presence-info'), h.subscribed(a2, 'presence-info'), h.subscribed(a, 'plain-info')]);
  const p = await (await api.get({ path: '/channels/presence-info', params: { info: 'user_count,subscription_count' } })).json();
  assert.deepEqual(p, { occupied: true, user_count: 1, subscription_count: 2 });
  const q = await (await api.get({ path: '/channels/plain-info', params: { info: 'subscription_count' } })).json();
  assert.deepEqual(q, { occupied: true, subscription_count: 1 });
  const empty = await (await api.get({ path: '/channels/nobody-here' })).json();
  assert.deepEqual(empty, { occupied: false });
  const bad = await api.get({ path: '/channels/plain-info', params: { info: 'user_count' } }).catch((e) => e);
  assert.equal(bad.status, 400);
  a.disconnect();
  a2.disconnect();
});

test('GET users lists distinct presence users, and only for presence channels', async () => {
  const a = h.client(srv.port, { presence: { user_id: 'ua' } });
  const b = h.client(srv.port, { presence: { user_id: 'ub' } });
  await Promise.all([h.subscribed(a, 'presence-users'), h.subscribed(b, 'presence-users')]);
  const r = await (await api.get({ path: '/channels/presence-users/users' })).json();
  assert.deepEqual(r.users.map((u) => u.id).sort(), ['ua', 'ub']);
  const bad = await api.get({ path: '/channels/plain/users' }).catch((e) => e);
  assert.equal(bad.status, 400);
  a.disconnect();
  b.disconnect();
});

test('trigger with info returns counts per channel', async () => {
  const a = h.client(srv.port, { presence: { user_id: 'i1' } });
  await Promise.all([h.subscribed(a, 'presence-trig'), h.subscribed(a, 'plain-trig')]);
  const r = await (await api.trigger(['presence-trig', 'plain-trig'], 'e', 'd', { info: 'user_count,subscription_count' })).json();
  assert.deepEqual(r, { channels: { 'presence-trig': { user_count: 1 }, 'plain-trig': { subscription_count: 1 } } });
  a.disconnect();
});

test('batch_events publishes each event and answers info by index', async () => {
  const a = h.client(srv.port);
  const [c1, c2] = await Promise.all([h.subscribed(a, 'batch-1'), h.subscribed(a, 'batch-2')]);
  const got = Promise.all([h.once(c1, 'one'), h.once(c2, 'two')]);
  const r = await api.triggerBatch([
    { channel: 'batch-1', name: 'one', data: '1', info: 'subscription_count' },
    { channel: 'batch-2', name: 'two', data: '2' },
  ]);
  assert.deepEqual(await r.json(), { batch: [{ subscription_count: 1 }, {}] });
  assert.deepEqual(await got, [1, 2]);
  const tooMany = await api.triggerBatch(Array.from({ length: 11 }, () => ({ channel: 'b', name: 'n', data: 'd' }))).catch((e) => e);
  assert.equal(tooMany.status, 400);
  a.disconnect();
});

test('authentication failures are 401 with a JSON error', async () => {
  const body = JSON.stringify({ name: 'e', channel: 'c', data: 'd' });
  const cases = [
    signed('POST', '/apps/app-id/events', body, { secret: 'wrong' }),
    signed('POST', '/apps/app-id/events', body, { key: 'other-key' }),
    signed('POST', '/apps/app-id/events', body, { ts: Math.floor(Date.now() / 1000) - 700 }),
    fetch(`http://127.0.0.1:${srv.port}/apps/app-id/events`, { method: 'POST', body }),
  ];
  for (const r of await Promise.all(cases)) {
    assert.equal(r.status, 401);
    assert.ok((await r.json()).error);
  }
  // body_md5 must match the body actually sent.
  const params = { auth_key: 'app-key', auth_timestamp: String(Math.floor(Date.now() / 1000)), auth_version: '1.0', body_md5: crypto.createHash('md5').update('{}').digest('hex') };
  const query = Object.keys(params).sort().map((k) => `${k}=${params[k]}`).join('&');
  const sig = crypto.createHmac('sha256', 'app-secret').update(`POST\n/apps/app-id/events\n${query}`).digest('hex');
  const r = await fetch(`http://127.0.0.1:${srv.port}/apps/app-id/events?${query}&auth_signature=${sig}`, { method: 'POST', body });
  assert.equal(r.status, 401);
  const ok = await signed('POST', '/apps/app-id/events', body);
  assert.equal(ok.status, 200);
});

test('bad requests are 400, oversize data 413, unknown apps 404, disabled apps 403', async () => {
  const check = async (resp, status) => {
    const r = await resp;
    assert.equal(r.status, status, await r.clone().text());
    assert.ok((await r.json()).error);
  };
  await check(signed('POST', '/apps/app-id/events', '{not json'), 400);
  await check(signed('POST', '/apps/app-id/events', JSON.stringify({ name: 'e', channel: 'bad name', data: 'd' })), 400);
  await check(signed('POST', '/apps/app-id/events', JSON.stringify({ name: 'e', data: 'd' })), 400);
  await check(signed('POST', '/apps/app-id/events', JSON.stringify({ name: 'x'.repeat(201), channel: 'c', data: 'd' })), 400);
  await check(signed('POST', '/apps/app-id/events', JSON.stringify({ name: 'e', channels: Array.from({ length: 101 }, (_, i) => `c${i}`), data: 'd' })), 400);
  await check(signed('POST', '/apps/app-id/events', JSON.stringify({ name: 'e', channel: 'c', data: 'd', socket_id: 'abc' })), 400);
  await check(signed('POST', '/apps/app-id/events', JSON.stringify({ name: 'e', channel: 'c', data: 'x'.repeat(10241) })), 413);
  await check(signed('POST', '/apps/app-id/batch_events', JSON.stringify({ batch: [{ name: 'e', channels: ['a', 'b'], data: 'd' }] })), 400);
  await check(signed('POST', '/apps/nope/events', '{}'), 404);
  await check(signed('POST', '/apps/disabled/events', JSON.stringify({ name: 'e', channel: 'c', data: 'd' }), { key: 'disabled-key', secret: 'disabled-secret' }), 403);
  await check(signed('GET', '/apps/app-id/nothing-here'), 404);
  await check(signed('DELETE', '/apps/app-id/channels'), 405);
  const sdkTooBig = await api.trigger('c', 'e', 'x'.repeat(10241)).catch((e) => e);
  assert.equal(sdkTooBig.status, 413);
});

test('a request body over the server limit is refused with 413 without reading it all', async () => {
  const r = await signed('POST', '/apps/app-id/events', 'x'.repeat(2 * 1024 * 1024));
  assert.equal(r.status, 413);
});

test('HTTP keep-alive serves several requests on one connection', async () => {
  const http = require('node:http');
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const sockets = new Set();
  for (let i = 0; i < 3; i++) {
    await new Promise((resolve, reject) => {
      http.get(`http://127.0.0.1:${srv.port}/up`, { agent }, (res) => {
        sockets.add(res.socket);
        res.resume();
        res.on('end', resolve);
      }).on('error', reject);
    });
  }
  assert.equal(sockets.size, 1);
  agent.destroy();
});
