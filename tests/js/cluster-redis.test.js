// The multi-node suite through the Redis adapter (redis.wasm) and a redis-server of its own.
'use strict';
require('./cluster-suite').clusterSuite('redis');
