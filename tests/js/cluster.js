// Cluster test helpers: a real broker process on a free port, and several switchyard processes
// joined through it by a real .wasm adapter.
'use strict';
const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const h = require('./helpers');

const PLUGINS = path.join(__dirname, '..', '..', 'guest-adapters', 'target', 'wasm32-wasip2', 'release');
// One compile cache for every node of a run: the first node compiles, the rest load in a
// millisecond (entries are written atomically, so concurrent writers are safe).
const CACHE = fs.mkdtempSync(path.join(os.tmpdir(), 'switchyard-cache-'));

const BROKERS = {
  redis: {
    bin: 'redis-server',
    args: (port) => ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    config: (port) => `host = "127.0.0.1"\nport = ${port}\n`,
  },
  nats: {
    bin: 'nats-server',
    args: (port) => ['-a', '127.0.0.1', '-p', String(port)],
    config: (port) => `host = "127.0.0.1"\nport = ${port}\n`,
  },
};

function portOpen(port) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.on('connect', () => { s.destroy(); resolve(true); });
    s.on('error', () => resolve(false));
  });
}

/// Starts `kind` (redis or nats) on a free port, or on `port` when given (a restart).
async function startBroker(kind, port) {
  const b = BROKERS[kind];
  if (spawnSync('which', [b.bin]).status !== 0) {
    throw new Error(`${b.bin} is not installed; the ${kind} cluster tests need it (see README)`);
  }
  port = port || (await h.freePort());
  const proc = spawn(b.bin, b.args(port), { stdio: 'ignore' });
  const deadline = Date.now() + 5000;
  while (!(await portOpen(port))) {
    if (proc.exitCode !== null) throw new Error(`${b.bin} exited at start-up on port ${port}`);
    if (Date.now() > deadline) throw new Error(`${b.bin} did not start on port ${port}`);
    await h.sleep(20);
  }
  const exited = new Promise((r) => proc.on('exit', r));
  return {
    kind,
    port,
    async kill() {
      if (proc.exitCode === null) proc.kill('SIGKILL');
      await exited;
    },
  };
}

/// The standard test config plus an adapter section pointing at `broker`.
function nodeConfig(broker, { routing = 'broadcast', nodeTimeoutMs = 2000, hookPort } = {}) {
  return (port) => `${h.defaultConfig(port, { hookPort })}
[adapter]
driver = "${broker.kind}"
plugins_dir = "${PLUGINS}"
cache_dir = "${CACHE}"
allow = ["127.0.0.1:${broker.port}"]

[adapter.config]
${BROKERS[broker.kind].config(broker.port)}
[cluster]
routing = "${routing}"
heartbeat_interval_ms = 250
node_timeout_ms = ${nodeTimeoutMs}
query_timeout_ms = 1000
`;
}

async function up(port) {
  const r = await fetch(`http://127.0.0.1:${port}/up`);
  return r.json();
}

/// Waits until every node hears the others and its adapter runs.
async function joined(nodes, ms = 10000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const states = await Promise.all(nodes.map((n) => up(n.port)));
    if (states.every((s) => s.adapter_state === 'running' && (s.peers || []).length === nodes.length - 1)) return;
    if (Date.now() > deadline) throw new Error(`cluster did not form: ${JSON.stringify(states)}\n${nodes.map((n) => n.log()).join('\n')}`);
    await h.sleep(50);
  }
}

/// Starts `n` nodes on `broker` and waits until they form a cluster.
async function startCluster(broker, n, options = {}) {
  const nodes = [];
  for (let i = 0; i < n; i++) nodes.push(await h.startServer({ ...options, config: nodeConfig(broker, options) }));
  await joined(nodes);
  return nodes;
}

/// The value of a counter in a node's /metrics.
async function metric(port, name) {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(name + ' ') || l.startsWith(name + '{'));
  return line ? Number(line.split(' ').pop()) : undefined;
}

/// Polls `check` until it returns truthy.
async function until(check, ms = 5000, what = 'condition') {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await h.sleep(25);
  }
}

module.exports = { startBroker, startCluster, nodeConfig, joined, up, metric, until };
