// Test helpers: start a real switchyard process on a free port, and make clients for it.
'use strict';
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const WebSocket = require('ws');
const Pusher = require('pusher-js');
const PusherServer = require('pusher');

Pusher.logToConsole = false;

const BIN = process.env.SWITCHYARD_BIN || path.join(__dirname, '..', '..', 'target', 'debug', 'switchyard');

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
    srv.on('error', reject);
  });
}

const APPS = {
  main: { appId: 'app-id', key: 'app-key', secret: 'app-secret' },
  noclient: { appId: 'noclient', key: 'noclient-key', secret: 'noclient-secret' },
  disabled: { appId: 'disabled', key: 'disabled-key', secret: 'disabled-secret' },
  small: { appId: 'small', key: 'small-key', secret: 'small-secret' },
};

/// The standard test config; `extra` is TOML appended to [server].
function defaultConfig(port, { hookPort, server = '', mainApp = '' } = {}) {
  return `
[server]
host = "127.0.0.1"
port = ${port}
shutdown_grace_secs = 3
${server}

[log]
level = "warn"

[webhooks]
batch_window_ms = 20
leave_delay_ms = 300

[[apps]]
id = "app-id"
key = "app-key"
secret = "app-secret"
subscription_count = true
${mainApp}
${hookPort ? `[[apps.webhooks]]\nurl = "http://127.0.0.1:${hookPort}/hook"\n` : ''}

[[apps]]
id = "noclient"
key = "noclient-key"
secret = "noclient-secret"
client_events = false
user_authentication = false

[[apps]]
id = "disabled"
key = "disabled-key"
secret = "disabled-secret"
enabled = false

[[apps]]
id = "small"
key = "small-key"
secret = "small-secret"
max_connections = 3
[apps.limits]
max_presence_members = 2
client_events_per_sec = 2
max_event_payload_bytes = 100
`;
}

/// Starts the server binary with `toml(port)` and waits until /up answers.
async function startServer(options = {}) {
  const port = await freePort();
  const text = (options.config || defaultConfig)(port, options);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'switchyard-test-'));
  const file = path.join(dir, 'config.toml');
  fs.writeFileSync(file, text);
  const proc = spawn(BIN, ['--config', file], { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  proc.stdout.on('data', (d) => (log += d));
  proc.stderr.on('data', (d) => (log += d));
  const exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  const deadline = Date.now() + 10000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`switchyard exited at start-up:\n${log}`);
    try {
      const r = await fetch(`http://127.0.0.1:${port}/up`);
      if (r.ok) break;
    } catch (_) { /* not up yet */ }
    if (Date.now() > deadline) throw new Error(`switchyard did not come up:\n${log}`);
    await sleep(20);
  }
  return {
    port,
    proc,
    exited,
    log: () => log,
    async stop() {
      if (proc.exitCode === null) proc.kill('SIGTERM');
      await exited;
    },
  };
}

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

/// A pusher-js client. `presence(channel)` gives presence data for channel auth.
function client(port, { app = APPS.main, user, presence, connect = true, extra = {} } = {}) {
  const sdk = server(port, app);
  const p = new Pusher(app.key, {
    wsHost: '127.0.0.1',
    wsPort: port,
    forceTLS: false,
    enabledTransports: ['ws'],
    cluster: 'mt1',
    disableStats: true,
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, cb) => {
        try {
          const data = channelName.startsWith('presence-') ? presence || { user_id: 'anon' } : undefined;
          cb(null, sdk.authorizeChannel(socketId, channelName, data));
        } catch (e) {
          cb(e, null);
        }
      },
    },
    userAuthentication: {
      customHandler: ({ socketId }, cb) => cb(null, sdk.authenticateUser(socketId, user || { id: 'nobody' })),
    },
    ...extra,
  });
  if (connect) p.connect();
  return p;
}

/// The pusher Node SDK pointed at the test server.
function server(port, app = APPS.main, extra = {}) {
  return new PusherServer({ ...app, host: '127.0.0.1', port, useTLS: false, ...extra });
}

function connected(p) {
  return new Promise((resolve, reject) => {
    if (p.connection.state === 'connected') return resolve(p.connection.socket_id);
    const t = setTimeout(() => reject(new Error(`not connected: ${p.connection.state}`)), 5000);
    t.unref();
    p.connection.bind('connected', () => {
      clearTimeout(t);
      resolve(p.connection.socket_id);
    });
  });
}

/// Resolves with the first `event` on `target` (a channel or connection), or rejects.
function once(target, event, ms = 5000) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`timed out waiting for ${event}`)), ms);
    t.unref();
    const cb = (data, meta) => {
      clearTimeout(t);
      target.unbind(event, cb);
      resolve(data === undefined ? meta : data);
    };
    target.bind(event, cb);
  });
}

async function subscribed(p, name) {
  const ch = p.subscribe(name);
  await Promise.race([
    once(ch, 'pusher:subscription_succeeded'),
    once(ch, 'pusher:subscription_error').then((e) => {
      throw new Error(`subscription to ${name} failed: ${JSON.stringify(e)}`);
    }),
  ]);
  return ch;
}

/// Resolves with the data of `p`'s `pusher:signin_success` (bind before calling signin()).
function signinSuccess(p) {
  return new Promise((resolve) => p.connection.bind('message', (m) => { if (m.event === 'pusher:signin_success') resolve(m.data); }));
}

/// Expects nothing named `event` on `target` for `ms`.
function never(target, event, ms = 300) {
  return new Promise((resolve, reject) => {
    const cb = (d) => reject(new Error(`unexpected ${event}: ${JSON.stringify(d)}`));
    target.bind(event, cb);
    setTimeout(() => {
      target.unbind(event, cb);
      resolve();
    }, ms);
  });
}

/// A raw WebSocket client for exact frames and close codes.
function raw(port, key = 'app-key', query = 'protocol=7&client=js&version=8.6.0&flash=false') {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/app/${key}?${query}`);
  const inbox = [];
  const waiters = [];
  ws.on('message', (data, isBinary) => {
    const msg = isBinary ? { binary: data } : JSON.parse(data.toString());
    inbox.push(msg);
    for (const w of [...waiters]) w();
  });
  const closed = new Promise((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })));
  ws.on('error', () => {});
  return {
    ws,
    inbox,
    closed,
    opened: new Promise((resolve, reject) => { ws.on('open', resolve); ws.on('error', reject); }),
    send(obj) { ws.send(typeof obj === 'string' ? obj : JSON.stringify(obj)); },
    /// Resolves with the first message (seen or future) matching `pred`.
    next(pred, ms = 5000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const i = inbox.findIndex(pred);
          if (i >= 0) {
            const [m] = inbox.splice(i, 1);
            waiters.splice(waiters.indexOf(check), 1);
            clearTimeout(t);
            resolve(m);
          }
        };
        const t = setTimeout(() => {
          waiters.splice(waiters.indexOf(check), 1);
          reject(new Error(`timed out; inbox: ${JSON.stringify(inbox)}`));
        }, ms);
        waiters.push(check);
        check();
      });
    },
    event(name, ms) { return this.next((m) => m.event === name, ms); },
    async socketId() {
      const m = await this.event('pusher:connection_established');
      return JSON.parse(m.data).socket_id;
    },
  };
}

/// A webhook receiver that records events and checks their signatures.
async function hookServer(secret = APPS.main.secret, key = APPS.main.key) {
  const crypto = require('node:crypto');
  const events = [];
  const bad = [];
  const srv = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      const sig = crypto.createHmac('sha256', secret).update(body).digest('hex');
      if (req.headers['x-pusher-signature'] !== sig || req.headers['x-pusher-key'] !== key) bad.push(body);
      else for (const e of JSON.parse(body).events) events.push(e);
      res.writeHead(200);
      res.end();
    });
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  return {
    port: srv.address().port,
    events,
    bad,
    close: () => new Promise((r) => srv.close(r)),
    async waitFor(pred, ms = 5000) {
      const deadline = Date.now() + ms;
      while (Date.now() < deadline) {
        const e = events.find(pred);
        if (e) return e;
        await sleep(20);
      }
      throw new Error(`no matching webhook; got ${JSON.stringify(events)}`);
    },
  };
}

module.exports = { APPS, startServer, defaultConfig, client, server, connected, once, never, subscribed, signinSuccess, raw, hookServer, sleep, freePort };
