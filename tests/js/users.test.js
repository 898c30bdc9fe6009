// User authentication: signin, server-to-user, terminate_connections, watchlist (§8).
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

const { signinSuccess } = h;

test('signin succeeds and sendToUser reaches every connection of that user', async () => {
  const tab1 = h.client(srv.port, { user: { id: 'u-1', user_info: { name: 'One' } } });
  const tab2 = h.client(srv.port, { user: { id: 'u-1' } });
  const other = h.client(srv.port, { user: { id: 'u-2' } });
  const done = [tab1, tab2, other].map(signinSuccess);
  [tab1, tab2, other].forEach((p) => p.signin());
  await Promise.all(done);
  await h.sleep(100); // pusher-js joins #server-to-user-{id} after signin_success
  const got = Promise.all([h.once(tab1.user, 'notice'), h.once(tab2.user, 'notice')]);
  const quiet = h.never(other.user, 'notice', 300);
  await api.sendToUser('u-1', 'notice', { hello: 'one' });
  assert.deepEqual(await got, [{ hello: 'one' }, { hello: 'one' }]);
  await quiet;
  [tab1, tab2, other].forEach((p) => p.disconnect());
});

test('a forged signin gets 4009', async () => {
  const c = h.raw(srv.port);
  const sid = await c.socketId();
  const userData = JSON.stringify({ id: 'mallory' });
  const sig = crypto.createHmac('sha256', 'not-the-secret').update(`${sid}::user::${userData}`).digest('hex');
  c.send({ event: 'pusher:signin', data: { auth: `app-key:${sig}`, user_data: userData } });
  assert.equal((await c.event('pusher:error')).data.code, 4009);
  assert.equal((await c.closed).code, 4009);
});

test('user_data without a string id is refused, and so is a second identity', async () => {
  const sign = (sid, data) => `app-key:${crypto.createHmac('sha256', 'app-secret').update(`${sid}::user::${data}`).digest('hex')}`;
  const c = h.raw(srv.port);
  const sid = await c.socketId();
  const noId = JSON.stringify({ name: 'x' });
  c.send({ event: 'pusher:signin', data: { auth: sign(sid, noId), user_data: noId } });
  assert.equal((await c.closed).code, 4009);

  const d = h.raw(srv.port);
  const sid2 = await d.socketId();
  const first = JSON.stringify({ id: 'a' });
  d.send({ event: 'pusher:signin', data: { auth: sign(sid2, first), user_data: first } });
  const ok = await d.event('pusher:signin_success');
  assert.equal(ok.data, JSON.stringify({ user_data: first }));
  const second = JSON.stringify({ id: 'b' });
  d.send({ event: 'pusher:signin', data: { auth: sign(sid2, second), user_data: second } });
  assert.equal((await d.closed).code, 4009);
});

test('only the signed-in user may join their server-to-user channel', async () => {
  const c = h.raw(srv.port);
  await c.socketId();
  c.send({ event: 'pusher:subscribe', data: { channel: '#server-to-user-victim', auth: '' } });
  const e = await c.event('pusher:subscription_error');
  assert.equal(e.data.status, 403);
  c.ws.close();
});

test('terminate_connections closes every connection of the user with 4009 and no other', async () => {
  const a1 = h.client(srv.port, { user: { id: 'doomed' } });
  const a2 = h.client(srv.port, { user: { id: 'doomed' } });
  const b = h.client(srv.port, { user: { id: 'safe' } });
  const done = [a1, a2, b].map(signinSuccess);
  [a1, a2, b].forEach((p) => p.signin());
  await Promise.all(done);
  const errors = [a1, a2].map((p) => h.once(p.connection, 'error'));
  const r = await api.terminateUserConnections('doomed');
  assert.equal(r.status, 200);
  for (const e of await Promise.all(errors)) assert.equal(e.data?.code ?? e.error?.data?.code, 4009);
  await h.sleep(300);
  assert.equal(b.connection.state, 'connected');
  assert.notEqual(a1.connection.state, 'connected');
  [a1, a2, b].forEach((p) => p.disconnect());
});

test('watchlist events report users coming online and going offline', async () => {
  const watcher = h.client(srv.port, { user: { id: 'watcher', watchlist: ['friend', 'already'] } });
  const already = h.client(srv.port, { user: { id: 'already' } });
  const s1 = signinSuccess(already);
  already.signin();
  await s1;
  const initial = h.once(watcher.user.watchlist, 'online');
  const s2 = signinSuccess(watcher);
  watcher.signin();
  await s2;
  assert.deepEqual((await initial).user_ids, ['already']);
  const online = h.once(watcher.user.watchlist, 'online');
  const friend = h.client(srv.port, { user: { id: 'friend' } });
  friend.signin();
  assert.deepEqual((await online).user_ids, ['friend']);
  const offline = h.once(watcher.user.watchlist, 'offline');
  friend.disconnect();
  assert.deepEqual((await offline).user_ids, ['friend']);
  [watcher, already].forEach((p) => p.disconnect());
});

test('signin on an app without user authentication is refused', async () => {
  const c = h.raw(srv.port, 'noclient-key');
  const sid = await c.socketId();
  const data = JSON.stringify({ id: 'x' });
  const sig = crypto.createHmac('sha256', 'noclient-secret').update(`${sid}::user::${data}`).digest('hex');
  c.send({ event: 'pusher:signin', data: { auth: `noclient-key:${sig}`, user_data: data } });
  assert.equal((await c.closed).code, 4009);
});
