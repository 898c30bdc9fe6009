// Hostile and broken input: clear errors, right close codes, other clients unaffected.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const h = require('./helpers');

let srv;
let api;
let bystander;
let bystanderCh;
test.before(async () => {
  srv = await h.startServer({ server: 'max_message_bytes = 4096\noutbound_queue = 64' });
  api = h.server(srv.port);
  bystander = h.client(srv.port);
  bystanderCh = await h.subscribed(bystander, 'bystanders');
});
test.after(async () => {
  // Every test leaves the bystander connected and receiving.
  const got = h.once(bystanderCh, 'still-here');
  await api.trigger('bystanders', 'still-here', 'yes');
  assert.equal(await got, 'yes');
  bystander.disconnect();
  await srv.stop();
});

test('malformed JSON and unknown events get pusher:error and the connection stays', async () => {
  const c = h.raw(srv.port);
  await c.socketId();
  for (const bad of ['not json', '[]', '{"event":5}', '{"event":"pusher:subscribe"}', '{"event":"pusher:nope","data":{}}', '{"event":"app-event","data":{}}']) {
    c.send(bad);
    const e = await c.event('pusher:error');
    assert.ok(e.data.message.length > 0);
  }
  c.send({ event: 'pusher:ping', data: {} });
  await c.event('pusher:pong');
  c.ws.close();
});

test('binary frames are refused with pusher:error', async () => {
  const c = h.raw(srv.port);
  await c.socketId();
  c.ws.send(Buffer.from('{"event":"pusher:ping","data":{}}'), { binary: true });
  const e = await c.event('pusher:error');
  assert.match(e.data.message, /binary/);
  c.ws.close();
});

test('a frame over the size limit closes with 1009', async () => {
  const c = h.raw(srv.port);
  await c.socketId();
  c.send({ event: 'pusher:ping', data: { pad: 'x'.repeat(5000) } });
  assert.equal((await c.closed).code, 1009);
});

test('an unmasked frame is a protocol error (1002)', async () => {
  const net = require('node:net');
  const sock = net.connect(srv.port, '127.0.0.1');
  await new Promise((r) => sock.on('connect', r));
  sock.write('GET /app/app-key?protocol=7 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n');
  let buf = Buffer.alloc(0);
  sock.on('data', (d) => (buf = Buffer.concat([buf, d])));
  await h.sleep(100);
  assert.match(buf.toString('latin1'), /^HTTP\/1.1 101/);
  buf = Buffer.alloc(0);
  sock.write(Buffer.from([0x81, 0x02, 0x68, 0x69]));
  await new Promise((r) => sock.on('close', r));
  const i = buf.indexOf(0x88);
  assert.ok(i >= 0, 'a close frame was sent');
  assert.equal(buf.readUInt16BE(i + 2), 1002);
});

test('a non-WebSocket request to /app is a 400, not a crash', async () => {
  const r = await fetch(`http://127.0.0.1:${srv.port}/app/app-key`);
  assert.equal(r.status, 400);
});

test('a flood of client frames is answered without affecting others', async () => {
  const c = h.raw(srv.port);
  await c.socketId();
  for (let i = 0; i < 2000; i++) c.send({ event: 'pusher:subscribe', data: { channel: `flood-${i % 50}` } });
  await h.sleep(500);
  // The flooder is either still served or closed as a slow consumer; the bystander is checked in after().
  c.ws.close();
});

test('a client that stops reading is closed as a slow consumer, not buffered without bound', async () => {
  const slow = h.raw(srv.port);
  await slow.socketId();
  slow.send({ event: 'pusher:subscribe', data: { channel: 'firehose' } });
  await slow.event('pusher_internal:subscription_succeeded');
  slow.ws._socket.pause();
  // Far more than loopback socket buffers hold: 30 MB against a 64-frame queue.
  const payload = 'x'.repeat(10000);
  const batch = Array.from({ length: 10 }, () => ({ channel: 'firehose', name: 'big', data: payload }));
  for (let i = 0; i < 300 && slow.ws.readyState === 1; i++) await api.triggerBatch(batch);
  slow.ws._socket.resume();
  // Closed with 4100 when the close frame fits, or dropped when the socket was stuck mid-write.
  const closed = await slow.closed;
  assert.ok([4100, 1006].includes(closed.code), `close code ${closed.code}`);
  const m = await (await fetch(`http://127.0.0.1:${srv.port}/metrics`)).text();
  assert.match(m, /^switchyard_slow_consumers_total [1-9]/m);
});
