// Faults across a cluster, per adapter: a node killed with SIGKILL (no goodbye), and the broker
// killed and restarted under connected clients.
'use strict';
const { describe, it, after } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./helpers');
const c = require('./cluster');

const who = (id) => ({ user_id: id, user_info: { name: id } });

for (const kind of ['redis', 'nats']) {
  describe(`${kind} adapter faults`, () => {
    const cleanup = [];
    after(async () => {
      for (const f of cleanup.reverse()) await f();
    });

    async function setup() {
      const broker = await c.startBroker(kind);
      cleanup.push(() => broker.kill());
      // The default node timeout (3 s): a dead node's members must be gone within 5 s.
      const nodes = await c.startCluster(broker, 3, { nodeTimeoutMs: 3000 });
      cleanup.push(() => Promise.all(nodes.map((n) => n.stop())));
      const clients = [];
      cleanup.push(async () => clients.forEach((p) => p.disconnect()));
      const on = (i, opts) => {
        const p = h.client(nodes[i].port, opts);
        clients.push(p);
        return p;
      };
      return { broker, nodes, on };
    }

    it('a node started late delivers cross-node traffic at once and learns the roster', async (t) => {
      const { broker, nodes, on } = await setup();
      const ann = on(0, { presence: who('ann') });
      await h.subscribed(ann, 'presence-late');
      // Not waiting for the new node to hear the others: as soon as it serves, it delivers.
      const late = await h.startServer({ config: c.nodeConfig(broker, { nodeTimeoutMs: 3000 }) });
      const startedAt = Date.now();
      const p = h.client(late.port);
      const ch = await h.subscribed(p, 'late-news');
      let got = false;
      ch.bind('hi', () => { got = true; });
      const sdk = h.server(nodes[0].port);
      await c.until(async () => {
        await sdk.trigger('late-news', 'hi', {});
        return got;
      }, 5000, 'an event from an old node on the new one');
      t.diagnostic(`first cross-node delivery ${Date.now() - startedAt} ms after the new node served`);
      const bob = h.client(late.port, { presence: who('bob') });
      await c.until(async () => (await c.up(late.port)).peers.length === 3, 5000, 'the new node hearing the others');
      const chBob = await h.subscribed(bob, 'presence-late');
      assert.deepEqual(Object.keys(chBob.members.members).sort(), ['ann', 'bob']);
      p.disconnect();
      bob.disconnect();
      await late.stop();
    });

    it('a node stopped with SIGTERM says goodbye: peers drop it at once, its members leave', async (t) => {
      const { nodes, on } = await setup();
      const watcher = on(0, { presence: who('stayer') });
      const ch = await h.subscribed(watcher, 'presence-leaving');
      const leaver = on(1, { presence: who('leaver') });
      const added = h.once(ch, 'pusher:member_added');
      await h.subscribed(leaver, 'presence-leaving');
      await added;
      const removed = h.once(ch, 'pusher:member_removed', 3000);
      const stoppedAt = Date.now();
      await nodes[1].stop();
      assert.equal((await removed).id, 'leaver');
      await c.until(async () => (await c.up(nodes[0].port)).peers.length === 1, 1500, 'the goodbye (well before the 3 s timeout)');
      t.diagnostic(`peer dropped ${Date.now() - stoppedAt} ms after SIGTERM`);
      assert.equal(await c.metric(nodes[0].port, 'switchyard_cluster_node_deaths_total'), 0, 'a goodbye, not a death');
    });

    it('a node killed with SIGKILL: its presence members leave within 5 s, the others carry on', async (t) => {
      const { nodes, on } = await setup();
      const watcher = on(0, { presence: who('watcher') });
      const ch = await h.subscribed(watcher, 'presence-crash');
      const victim = on(2, { presence: who('victim') });
      const added = h.once(ch, 'pusher:member_added');
      await h.subscribed(victim, 'presence-crash');
      assert.equal((await added).id, 'victim');
      const news = await h.subscribed(on(1), 'after-crash');

      const removed = h.once(ch, 'pusher:member_removed', 8000);
      const killedAt = Date.now();
      nodes[2].proc.kill('SIGKILL');
      assert.equal((await removed).id, 'victim');
      const took = Date.now() - killedAt;
      t.diagnostic(`member_removed ${took} ms after SIGKILL`);
      assert.ok(took <= 5000, `member_removed after ${took} ms`);
      victim.disconnect();

      // The survivors still serve and still see each other.
      assert.equal(watcher.connection.state, 'connected');
      const got = h.once(news, 'ping');
      await h.server(nodes[0].port).trigger('after-crash', 'ping', { ok: true });
      assert.deepEqual(await got, { ok: true });
      // Every survivor drops the dead node on its own clock, within a tick of the others.
      await c.until(async () => {
        const users = await (await h.server(nodes[1].port).get({ path: '/channels/presence-crash/users' })).json();
        return users.users.length === 1 && users.users[0].id === 'watcher';
      }, 2000, 'node 1 dropping the dead node\'s member');
      await c.until(async () => (await c.up(nodes[0].port)).peers.length === 1, 3000, 'peer list without the dead node');
    });

    it('the broker killed and restarted: clients stay connected and delivery is back within 2 s', async (t) => {
      const { broker, nodes, on } = await setup();
      const sub = on(1);
      const ch = await h.subscribed(sub, 'outage');
      let drops = 0;
      sub.connection.bind('state_change', (s) => { if (s.current !== 'connected') drops++; });
      const seen = [];
      ch.bind('tick', (d) => seen.push(d.i));
      const sdk = h.server(nodes[0].port);
      await sdk.trigger('outage', 'tick', { i: -1 });
      await c.until(() => seen.length === 1, 3000, 'delivery before the outage');

      await broker.kill();
      // Publishing during the outage must not fail the HTTP call nor the node.
      for (let i = 0; i < 5; i++) {
        const r = await sdk.trigger('outage', 'tick', { i: 1000 + i });
        assert.equal(r.status, 200);
      }
      await h.sleep(1500);
      const restarted = await c.startBroker(kind, broker.port);
      cleanup.push(() => restarted.kill());
      const backAt = Date.now();
      let i = 0;
      await c.until(async () => {
        await sdk.trigger('outage', 'tick', { i: i++ });
        return seen.some((v) => v >= 0 && v < 1000);
      }, 5000, 'delivery after the broker came back');
      const took = Date.now() - backAt;
      t.diagnostic(`delivery resumed ${took} ms after the broker returned`);
      assert.ok(took <= 2000, `delivery resumed ${took} ms after the broker returned`);
      assert.equal(drops, 0, 'the client never left the connected state');
      // What the outage cost is visible in the gap counter on the receiving node.
      await sdk.trigger('outage', 'tick', { i: 9999 });
      await c.until(() => seen.includes(9999), 3000, 'the last event');
      const gaps = await c.metric(nodes[1].port, 'switchyard_cluster_gaps_total');
      t.diagnostic(`gap counter on the receiving node: ${gaps}`);
      assert.ok(gaps >= 5, `gaps counted: ${gaps}`);
    });
  });
}
