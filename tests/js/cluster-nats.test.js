// The multi-node suite through the NATS adapter (nats.wasm) and a nats-server of its own.
'use strict';
require('./cluster-suite').clusterSuite('nats');
