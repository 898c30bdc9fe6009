// The multi-node acceptance suite, run once per adapter and routing mode: three switchyard
// processes joined by a real broker through a real .wasm adapter, driven with pusher-js and
// the pusher SDK. Each test talks to different nodes for publishing and receiving.
'use strict';
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./helpers');
const c = require('./cluster');

const who = (id, name) => ({ user_id: id, user_info: { name } });

function clusterSuite(kind) {
  for (const routing of ['broadcast', 'interest']) {
    describe(`${kind} adapter, ${routing} routing`, () => {
      let broker;
      let hooks;
      let nodes;
      const clients = [];
      const on = (i, opts) => {
        const p = h.client(nodes[i].port, opts);
        clients.push(p);
        return p;
      };

      before(async () => {
        broker = await c.startBroker(kind);
        hooks = await h.hookServer();
        nodes = await c.startCluster(broker, 3, { routing, hookPort: hooks.port });
      });
      after(async () => {
        for (const p of clients) p.disconnect();
        await Promise.all((nodes || []).map((n) => n.stop()));
        if (broker) await broker.kill();
        if (hooks) await hooks.close();
      });

      it('an HTTP publish on one node reaches subscribers on every node, except the excluded socket', async () => {
        const subs = [on(0), on(1), on(2)];
        const chans = await Promise.all(subs.map((p) => h.subscribed(p, 'news')));
        const excluded = on(2);
        const exCh = await h.subscribed(excluded, 'news');
        const socketId = await h.connected(excluded);
        await h.sleep(100); // interest routing: let the channel subscriptions reach the broker
        const got = chans.map((ch) => h.once(ch, 'headline'));
        const none = h.never(exCh, 'headline', 500);
        await h.server(nodes[1].port).trigger('news', 'headline', { n: 1 }, { socket_id: socketId });
        for (const d of await Promise.all(got)) assert.deepEqual(d, { n: 1 });
        await none;
      });

      it('client events cross nodes and are not echoed to the sender', async () => {
        const a = on(0);
        const b = on(2);
        const chA = await h.subscribed(a, 'private-chat');
        const chB = await h.subscribed(b, 'private-chat');
        await h.sleep(100);
        const got = h.once(chB, 'client-typing');
        const echo = h.never(chA, 'client-typing', 400);
        chA.trigger('client-typing', { who: 'a' });
        assert.deepEqual(await got, { who: 'a' });
        await echo;
      });

      it('presence: the roster spans nodes and members are added and removed once', async () => {
        const ann = on(0, { presence: who('ann', 'Ann') });
        const chAnn = await h.subscribed(ann, 'presence-room');
        let adds = 0;
        let removes = 0;
        chAnn.bind('pusher:member_added', () => adds++);
        chAnn.bind('pusher:member_removed', () => removes++);
        await c.until(async () => (await (await h.server(nodes[1].port).get({ path: '/channels/presence-room/users' })).json()).users.length === 1, 3000, 'ann on node 1');
        // bob connects twice, on two other nodes.
        const bob1 = on(1, { presence: who('bob', 'Bob') });
        const chBob = await h.subscribed(bob1, 'presence-room');
        assert.equal(chBob.members.count, 2);
        assert.deepEqual(chBob.members.get('ann').info, { name: 'Ann' });
        const bob2 = on(2, { presence: who('bob', 'Bob') });
        await h.subscribed(bob2, 'presence-room');
        await h.sleep(300);
        assert.equal(adds, 1, 'bob added once');
        bob1.disconnect();
        await h.sleep(300);
        assert.equal(removes, 0, 'bob still has a socket on node 2');
        bob2.disconnect();
        await c.until(() => removes === 1, 3000, 'member_removed');
        await h.sleep(200);
        assert.equal(removes, 1);
      });

      it('HTTP queries answer for the whole cluster from any node', async () => {
        const ps = [on(0, { presence: who('q1', 'Q') }), on(1, { presence: who('q2', 'Q') }), on(2, { presence: who('q2', 'Q') })];
        await Promise.all(ps.map((p) => h.subscribed(p, 'presence-stats')));
        await Promise.all([on(0), on(2)].map((p) => h.subscribed(p, 'stats-public')));
        for (const n of nodes) {
          const sdk = h.server(n.port);
          await c.until(async () => {
            const ch = await (await sdk.get({ path: '/channels/presence-stats', params: { info: 'user_count,subscription_count' } })).json();
            return ch.occupied && ch.user_count === 2 && ch.subscription_count === 3;
          }, 3000, `presence-stats counts on node ${n.port}`);
          const pub = await (await sdk.get({ path: '/channels/stats-public', params: { info: 'subscription_count' } })).json();
          assert.deepEqual(pub, { occupied: true, subscription_count: 2 });
          const list = await (await sdk.get({ path: '/channels', params: { filter_by_prefix: 'presence-stats', info: 'user_count' } })).json();
          assert.deepEqual(list.channels['presence-stats'], { user_count: 2 });
          const users = await (await sdk.get({ path: '/channels/presence-stats/users' })).json();
          assert.deepEqual(users.users.map((u) => u.id).sort(), ['q1', 'q2']);
        }
      });

      it('terminate_connections closes the user on every node, with 4009', async () => {
        const u1 = on(0, { user: { id: 'doomed' } });
        const u2 = on(2, { user: { id: 'doomed' } });
        const safe = on(1, { user: { id: 'safe' } });
        const done = [u1, u2, safe].map(h.signinSuccess);
        [u1, u2, safe].forEach((p) => p.signin());
        await Promise.all(done);
        const errors = [u1, u2].map((p) => h.once(p.connection, 'error'));
        await h.server(nodes[1].port).terminateUserConnections('doomed');
        for (const e of await Promise.all(errors)) assert.equal(e.data?.code ?? e.error?.data?.code, 4009);
        await h.sleep(200);
        assert.equal(safe.connection.state, 'connected');
      });

      it('watchlists see users come online and go offline on other nodes', async () => {
        const watcher = on(0, { user: { id: `w-${routing}`, watchlist: [`pal-${routing}`] } });
        let s = h.signinSuccess(watcher);
        watcher.signin();
        await s;
        const online = h.once(watcher.user.watchlist, 'online');
        const pal = on(2, { user: { id: `pal-${routing}` } });
        s = h.signinSuccess(pal);
        pal.signin();
        await s;
        assert.deepEqual((await online).user_ids, [`pal-${routing}`]);
        const offline = h.once(watcher.user.watchlist, 'offline');
        pal.disconnect();
        assert.deepEqual((await offline).user_ids, [`pal-${routing}`]);
      });

      it('500 rapid events from one publisher arrive in order on every node', async () => {
        const subs = [on(0), on(1), on(2)];
        const chans = await Promise.all(subs.map((p) => h.subscribed(p, 'ordered')));
        await h.sleep(100);
        const seen = chans.map(() => []);
        chans.forEach((ch, i) => ch.bind('n', (d) => seen[i].push(d.i)));
        const sdk = h.server(nodes[0].port);
        for (let i = 0; i < 500; i += 10) {
          await sdk.triggerBatch(Array.from({ length: 10 }, (_, k) => ({ channel: 'ordered', name: 'n', data: { i: i + k } })));
        }
        await c.until(() => seen.every((s) => s.length >= 500), 10000, '500 events on every node');
        const want = Array.from({ length: 500 }, (_, i) => i);
        for (const s of seen) assert.deepEqual(s, want);
      });

      it('cache channels serve the last event cluster-wide', async () => {
        await h.server(nodes[0].port).trigger('cache-latest', 'v', { v: 7 });
        await h.sleep(200);
        const p = on(2);
        const ch = p.subscribe('cache-latest');
        assert.deepEqual(await h.once(ch, 'v'), { v: 7 });
        const info = await (await h.server(nodes[1].port).get({ path: '/channels/cache-latest', params: { info: 'cache' } })).json();
        assert.equal(JSON.parse(info.cache.data).v, 7);
      });

      it('channel_occupied and channel_vacated fire once for the cluster', async () => {
        const a = on(0);
        const b = on(1);
        await h.subscribed(a, 'hooked');
        await h.sleep(300);
        await h.subscribed(b, 'hooked');
        await h.sleep(300);
        a.unsubscribe('hooked');
        await h.sleep(300);
        b.unsubscribe('hooked');
        await hooks.waitFor((e) => e.name === 'channel_vacated' && e.channel === 'hooked');
        await h.sleep(300);
        const names = hooks.events
          .filter((e) => e.channel === 'hooked' && e.name.startsWith('channel_'))
          .map((e) => e.name);
        assert.deepEqual(names, ['channel_occupied', 'channel_vacated']);
      });
    });
  }
}

module.exports = { clusterSuite };
