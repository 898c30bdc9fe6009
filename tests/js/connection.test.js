// Connection lifecycle: handshake, socket ids, ping/pong, refusal codes (summary §3, §4).
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const h = require('./helpers');

let srv;
test.before(async () => { srv = await startSmall(); });
test.after(async () => { await srv.stop(); });

function startSmall() {
  return h.startServer();
}

test('pusher-js connects and gets a socket id of two integers', async () => {
  const p = h.client(srv.port);
  const id = await h.connected(p);
  assert.match(id, /^\d+\.\d+$/);
  p.disconnect();
});

test('connection_established carries socket_id and a positive activity_timeout', async () => {
  const c = h.raw(srv.port);
  const m = await c.event('pusher:connection_established');
  assert.equal(typeof m.data, 'string', 'data is double-encoded');
  const data = JSON.parse(m.data);
  assert.match(data.socket_id, /^\d+\.\d+$/);
  assert.ok(data.activity_timeout > 0);
  c.ws.close();
});

test('socket ids are unique per connection', async () => {
  const ids = new Set();
  const cs = [];
  for (let i = 0; i < 20; i++) {
    const c = h.raw(srv.port);
    cs.push(c);
    ids.add(await c.socketId());
  }
  assert.equal(ids.size, 20);
  for (const c of cs) c.ws.close();
});

test('pusher:ping is answered with pusher:pong', async () => {
  const c = h.raw(srv.port);
  await c.socketId();
  c.send({ event: 'pusher:ping', data: {} });
  const m = await c.event('pusher:pong');
  assert.deepEqual(m.data, {});
  c.ws.close();
});

test('a WebSocket ping frame is answered with a pong frame', async () => {
  const c = h.raw(srv.port);
  await c.socketId();
  const pong = new Promise((r) => c.ws.on('pong', (d) => r(d.toString())));
  c.ws.ping('hi');
  assert.equal(await pong, 'hi');
  c.ws.close();
});

for (const [name, key, query, code] of [
  ['unknown app key', 'no-such-key', 'protocol=7', 4001],
  ['disabled app', 'disabled-key', 'protocol=7', 4003],
  ['unsupported protocol', 'app-key', 'protocol=2', 4007],
]) {
  test(`${name} gets pusher:error ${code} and close ${code}`, async () => {
    const c = h.raw(srv.port, key, query);
    const err = await c.event('pusher:error');
    assert.equal(err.data.code, code);
    const closed = await c.closed;
    assert.equal(closed.code, code);
  });
}

test('an app over its connection quota gets 4004; others keep working', async () => {
  const a = h.raw(srv.port, 'small-key');
  const b = h.raw(srv.port, 'small-key');
  const b2 = h.raw(srv.port, 'small-key');
  await a.socketId();
  await b.socketId();
  await b2.socketId();
  const c = h.raw(srv.port, 'small-key');
  assert.equal((await c.closed).code, 4004);
  a.send({ event: 'pusher:ping', data: {} });
  await a.event('pusher:pong');
  a.ws.close();
  await a.closed;
  await h.sleep(50);
  const d = h.raw(srv.port, 'small-key');
  await d.socketId();
  d.ws.close();
  b.ws.close();
  b2.ws.close();
});

test('pusher-js stops reconnecting on an unknown key', async () => {
  const p = h.client(srv.port, { app: { ...h.APPS.main, key: 'nope' } });
  const err = await h.once(p.connection, 'error');
  const code = err.data?.code ?? err.error?.data?.code;
  assert.equal(code, 4001, JSON.stringify(err));
  let reconnects = 0;
  p.connection.bind('connecting_in', () => reconnects++);
  await h.sleep(1500);
  assert.equal(p.connection.state, 'disconnected', 'pusher-js gave up');
  assert.equal(reconnects, 0, 'no reconnect after a 4001');
  p.disconnect();
});

test('health and metrics endpoints answer', async () => {
  const up = await fetch(`http://127.0.0.1:${srv.port}/up`);
  assert.equal(up.status, 200);
  const m = await (await fetch(`http://127.0.0.1:${srv.port}/metrics`)).text();
  assert.match(m, /^switchyard_connections_total \d+$/m);
  assert.match(m, /^switchyard_http_requests_total\{status="2xx"\} \d+$/m);
});

test('the server pings a silent client and closes it with 4201 when no pong comes', async () => {
  const quick = await h.startServer({ server: 'activity_timeout_secs = 1\npong_timeout_secs = 1' });
  try {
    const c = h.raw(quick.port);
    await c.socketId();
    // ws answers protocol pings automatically, but not pusher:ping; stay silent.
    const ping = await c.event('pusher:ping', 3000);
    assert.ok(ping);
    const closed = await c.closed;
    assert.equal(closed.code, 4201);
    // A client that answers stays connected.
    const d = h.raw(quick.port);
    await d.socketId();
    for (let i = 0; i < 3; i++) {
      await d.event('pusher:ping', 3000);
      d.send({ event: 'pusher:pong', data: {} });
    }
    assert.equal(d.ws.readyState, 1);
    d.ws.close();
  } finally {
    await quick.stop();
  }
});

test('authorized-connections mode closes an anonymous socket with 4009', async () => {
  const strict = await h.startServer({ mainApp: 'authorized_connections_timeout_secs = 1' });
  try {
    const c = h.raw(strict.port);
    await c.socketId();
    c.send({ event: 'pusher:subscribe', data: { channel: 'public' } });
    assert.equal((await c.closed).code, 4009);
    // Signing in keeps the connection.
    const p = h.client(strict.port, { user: { id: 'u1' } });
    await h.connected(p);
    p.signin();
    await h.sleep(1500);
    assert.equal(p.connection.state, 'connected');
    p.disconnect();
  } finally {
    await strict.stop();
  }
});

test('SIGTERM closes clients with 4200 and the process exits cleanly', async () => {
  const s = await h.startServer();
  const c = h.raw(s.port);
  await c.socketId();
  s.proc.kill('SIGTERM');
  const closed = await c.closed;
  assert.equal(closed.code, 4200);
  const exit = await s.exited;
  assert.equal(exit.code, 0);
});
