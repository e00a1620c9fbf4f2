"""Three kvio servers behind twemproxy (nutcracker), with the config of
docs/scaling.md ("Behind twemproxy"): 3,000 keys through each pool, read
back through it, and each key on exactly one server, asked directly.

ci/clients starts the servers and nutcracker and gives the addresses:
KVIO_PROXY_MEMCACHE and KVIO_PROXY_RESP (nutcracker's two pools), and
KVIO_BACKENDS_MEMCACHE and KVIO_BACKENDS_RESP (the servers' listeners,
comma-separated, in the config's order). Every socket has a timeout.
"""

import os
import socket
import time
import unittest

import redis
from pymemcache.client.base import Client as Memcache

TIMEOUT = 10
KEYS = 3000


def address(text):
    host, port = text.rsplit(":", 1)
    return host, int(port)


def backends(variable):
    return [address(a) for a in os.environ[variable].split(",")]


def memcache(addr):
    return Memcache(addr, connect_timeout=TIMEOUT, timeout=TIMEOUT)


def resp(addr):
    # twemproxy does not answer HELLO or CLIENT SETINFO: RESP2, no library name.
    host, port = addr
    return redis.Redis(
        host=host,
        port=port,
        protocol=2,
        driver_info=None,
        socket_timeout=TIMEOUT,
        socket_connect_timeout=TIMEOUT,
    )


def wait_listening(addr, seconds=10.0):
    """Until nutcracker accepts connections (it has no start-up line)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection(addr, timeout=TIMEOUT).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def chunks(items, size=100):
    return [items[i : i + size] for i in range(0, len(items), size)]


class Twemproxy(unittest.TestCase):
    def check_placement(self, keys, found_on):
        """found_on: for each backend, the set of keys it holds."""
        for key in keys:
            holders = [i for i, held in enumerate(found_on) if key in held]
            self.assertEqual(len(holders), 1, f"{key!r} is on backends {holders}")
        # ketama over three equal servers: none is empty or holds nearly all.
        counts = [len(held) for held in found_on]
        self.assertEqual(sum(counts), len(keys))
        for count in counts:
            self.assertGreater(count, len(keys) // 10, f"keys per backend: {counts}")

    def test_memcache_pool(self):
        proxy = address(os.environ["KVIO_PROXY_MEMCACHE"])
        wait_listening(proxy)
        mc = memcache(proxy)
        keys = [f"mc:{i}" for i in range(KEYS)]
        for key in keys:
            self.assertTrue(mc.set(key, f"v-{key}".encode(), noreply=False))
        got = {}
        for chunk in chunks(keys):
            got.update(mc.get_many(chunk))
        self.assertEqual(got, {key: f"v-{key}".encode() for key in keys})
        self.assertEqual(mc.get("mc:missing"), None)
        self.assertTrue(mc.delete(keys[0], noreply=False))
        self.assertIsNone(mc.get(keys[0]))
        mc.close()
        found_on = []
        for backend in backends("KVIO_BACKENDS_MEMCACHE"):
            direct = memcache(backend)
            held = set()
            for chunk in chunks(keys[1:]):
                for key, value in direct.get_many(chunk).items():
                    self.assertEqual(value, f"v-{key}".encode())
                    held.add(key)
            direct.close()
            found_on.append(held)
        self.check_placement(keys[1:], found_on)

    def test_redis_pool(self):
        proxy = address(os.environ["KVIO_PROXY_RESP"])
        wait_listening(proxy)
        r = resp(proxy)
        keys = [f"redis:{i}".encode() for i in range(KEYS)]
        with r.pipeline(transaction=False) as p:
            for key in keys:
                p.set(key, b"v-" + key)
            self.assertEqual(p.execute(), [True] * KEYS)
        got = []
        for chunk in chunks(keys):
            got.extend(r.mget(chunk))
        self.assertEqual(got, [b"v-" + key for key in keys])
        # Commands over several keys, split per server by the proxy.
        self.assertTrue(r.mset({b"redis:m1": b"1", b"redis:m2": b"2", b"redis:m3": b"3"}))
        self.assertEqual(r.exists(b"redis:m1", b"redis:m2", b"redis:m3", b"redis:missing"), 3)
        self.assertEqual(r.delete(b"redis:m1", b"redis:m2", b"redis:m3", b"redis:missing"), 3)
        self.assertTrue(r.set(b"redis:ttl", b"v", ex=100))
        self.assertIn(r.ttl(b"redis:ttl"), (99, 100))
        self.assertEqual(r.delete(b"redis:ttl"), 1)
        r.close()
        found_on = []
        for backend in backends("KVIO_BACKENDS_RESP"):
            direct = resp(backend)
            held = set()
            for chunk in chunks(keys):
                for key, value in zip(chunk, direct.mget(chunk)):
                    if value is not None:
                        self.assertEqual(value, b"v-" + key)
                        held.add(key)
            direct.close()
            found_on.append(held)
        self.check_placement(keys, found_on)

    def test_pools_place_keys_alike(self):
        # Same server names in both pools: a key written over memcached
        # through the proxy is read over RESP through the proxy.
        mc = memcache(address(os.environ["KVIO_PROXY_MEMCACHE"]))
        r = resp(address(os.environ["KVIO_PROXY_RESP"]))
        wait_listening(address(os.environ["KVIO_PROXY_MEMCACHE"]))
        wait_listening(address(os.environ["KVIO_PROXY_RESP"]))
        keys = [f"both:{i}" for i in range(300)]
        for key in keys:
            self.assertTrue(mc.set(key, key.encode(), noreply=False))
        got = []
        for chunk in chunks(keys):
            got.extend(r.mget(chunk))
        self.assertEqual(got, [key.encode() for key in keys])
        mc.close()
        r.close()


if __name__ == "__main__":
    unittest.main()
