"""redis-py, the default client as users build it, against kvio's RESP
listener (docs/redis-and-memcached.md, "RESP2").

ci/clients starts `kvio serve --resp 127.0.0.1:0 --memcache 127.0.0.1:0`
and gives the addresses in KVIO_RESP, KVIO_MEMCACHE and KVIO_ADDR (kvio
frames), and the binary in KVIO_BIN. Every socket has a timeout; every
wait for expiry polls against a deadline.
"""

import logging
import os
import subprocess
import time
import unittest

import redis
from pymemcache.client.base import Client as Memcache

TIMEOUT = 10
# The store's value limit at the default --max-frame-len (1,048,576 - 1,049).
VALUE_LIMIT = 1_047_527


def address(variable):
    host, port = os.environ[variable].rsplit(":", 1)
    return host, int(port)


def client(**kwargs):
    """The default redis-py client: RESP3 asked (HELLO 3), RESP2 got."""
    host, port = address("KVIO_RESP")
    return redis.Redis(host=host, port=port, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT, **kwargs)


def poll(condition, seconds=5.0, pause=0.01):
    """True once condition() is, False if `seconds` pass first."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(pause)
    return True


class RedisPy(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.r = client()

    def setUp(self):
        # Each test's keys start with its name: tests share one server.
        self.p = self.id().rsplit(".", 1)[-1] + ":"

    def key(self, name):
        return self.p + name

    def test_default_client_falls_back_to_resp2(self):
        with self.assertLogs("redis.connection", logging.WARNING) as logs:
            r = client()
            self.assertTrue(r.ping())
        self.assertIn("Falling back to RESP2", "\n".join(logs.output))
        connection = r.connection_pool.get_connection()
        try:
            self.assertEqual(connection.protocol, 2)
        finally:
            r.connection_pool.release(connection)
        # Explicitly RESP2: no HELLO 3, no warning, the same answers.
        r2 = client(protocol=2)
        self.assertTrue(r2.ping())
        r.close()
        r2.close()

    def test_hello_3_is_noproto(self):
        with self.assertRaises(redis.ResponseError) as caught:
            self.r.execute_command("HELLO", 3)
        self.assertEqual(str(caught.exception), "NOPROTO sorry, this protocol version is not supported")
        self.assertEqual(self.r.execute_command("HELLO", 2)[:4], [b"server", b"redis", b"version", b"7.0.0"])

    def test_connection_commands(self):
        r = self.r
        self.assertTrue(r.ping())
        self.assertEqual(r.echo("hi"), b"hi")
        self.assertTrue(r.execute_command("SELECT", 0))
        self.assertTrue(r.client_setname("me"))
        self.assertIsNone(r.client_getname(), "names are not kept")
        self.assertEqual(r.client_id(), 1)
        self.assertEqual(r.config_get("save"), {"save": ""})
        self.assertEqual(r.config_get("*"), {"save": "", "appendonly": "no", "databases": "1"})
        self.assertEqual(r.command_count(), 21)
        info = r.info()
        self.assertEqual(info["redis_version"], "7.0.0")
        self.assertIn("connected_clients", info)
        self.assertIn("total_commands_processed", info)
        self.assertIn("used_memory", r.info("memory"))
        self.assertGreaterEqual(r.dbsize(), 0)

    def test_strings(self):
        r, k = self.r, self.key
        self.assertIsNone(r.get(k("a")))
        self.assertTrue(r.set(k("a"), "1"))
        self.assertEqual(r.get(k("a")), b"1")
        self.assertTrue(r.mset({k("b"): "2", k("c"): "3"}))
        self.assertEqual(r.mget(k("a"), k("nope"), k("c")), [b"1", None, b"3"])
        self.assertEqual(r.exists(k("a"), k("a"), k("nope")), 2)
        self.assertEqual(r.delete(k("a"), k("b"), k("nope")), 2)
        self.assertEqual(r.exists(k("a"), k("b"), k("c")), 1)
        self.assertTrue(r.set(k("e"), ""))
        self.assertEqual(r.get(k("e")), b"")

    def test_set_options(self):
        r, k = self.r, self.key
        self.assertTrue(r.set(k("n"), "v", nx=True))
        self.assertIsNone(r.set(k("n"), "w", nx=True))
        self.assertIsNone(r.set(k("nope"), "w", xx=True))
        self.assertEqual(r.set(k("n"), "w", xx=True, get=True), b"v")
        self.assertTrue(r.set(k("n"), "v", ex=100))
        self.assertIn(r.ttl(k("n")), (99, 100))
        self.assertTrue(r.set(k("n"), "v", px=100_000))
        self.assertTrue(95_000 <= r.pttl(k("n")) <= 100_000)
        self.assertTrue(r.set(k("n"), "v", exat=int(time.time()) + 100))
        self.assertTrue(98 <= r.ttl(k("n")) <= 100)
        self.assertTrue(r.set(k("n"), "v", pxat=(int(time.time()) + 100) * 1000))
        self.assertTrue(r.set(k("n"), "w", keepttl=True))
        self.assertTrue(98 <= r.ttl(k("n")) <= 100)
        self.assertTrue(r.set(k("n"), "x"))
        self.assertEqual(r.ttl(k("n")), -1)

    def test_expiry(self):
        r, k = self.r, self.key
        r.set(k("a"), "v")
        self.assertTrue(r.expire(k("a"), 100))
        self.assertFalse(r.expire(k("nope"), 100))
        self.assertIn(r.ttl(k("a")), (99, 100))
        self.assertTrue(r.pexpire(k("a"), 50_000))
        self.assertTrue(45_000 <= r.pttl(k("a")) <= 50_000)
        self.assertTrue(r.persist(k("a")))
        self.assertFalse(r.persist(k("a")))
        self.assertEqual(r.ttl(k("a")), -1)
        self.assertEqual(r.ttl(k("nope")), -2)
        # Short TTLs run out (polled against a deadline).
        r.set(k("px"), "v", px=50)
        self.assertLessEqual(r.pttl(k("px")), 50)
        r.set(k("pexpire"), "v")
        r.pexpire(k("pexpire"), 30)
        started = time.monotonic()
        r.set(k("ex"), "v", ex=1)
        for name in ("px", "pexpire", "ex"):
            self.assertTrue(poll(lambda: r.get(k(name)) is None), f"{name} did not expire within 5 s")
            self.assertEqual(r.exists(k(name)), 0)
            self.assertEqual(r.ttl(k(name)), -2)
        self.assertGreaterEqual(time.monotonic() - started, 0.9)
        self.assertEqual(r.get(k("a")), b"v")

    def test_pipeline_1000_deep(self):
        r, k = self.r, self.key
        with r.pipeline(transaction=False) as p:
            for i in range(1000):
                p.set(k(f"{i}"), f"v{i}")
            for i in range(1000):
                p.get(k(f"{i}"))
            results = p.execute()
        self.assertEqual(results[:1000], [True] * 1000)
        self.assertEqual(results[1000:], [f"v{i}".encode() for i in range(1000)])
        # A pipeline whose commands fail goes on: each failure is in its place.
        with r.pipeline(transaction=False) as p:
            p.set(k("x"), "1").execute_command("LPUSH", k("l"), "a").get(k("x"))
            results = p.execute(raise_on_error=False)
        self.assertTrue(results[0])
        self.assertIsInstance(results[1], redis.ResponseError)
        self.assertEqual(results[2], b"1")

    def test_transactions_are_not_served(self):
        # redis-py's default pipeline wraps its commands in MULTI/EXEC,
        # which kvio does not know: the client raises, but each command
        # ran when it came (docs/redis-and-memcached.md says so).
        r, k = self.r, self.key
        with self.assertRaises(redis.ResponseError) as caught:
            with r.pipeline() as p:
                p.set(k("t"), "ran")
                p.execute()
        self.assertIn("unknown command 'EXEC'", str(caught.exception))
        self.assertEqual(r.get(k("t")), b"ran")
        self.assertTrue(r.ping(), "the connection pool still works")

    def test_binary_safe(self):
        r, k = self.r, self.key
        value = bytes(range(256)) + b"\r\n$-1\r\n*2\r\n" + bytes(reversed(range(256)))
        key = k("\r\n\0 \xff").encode("latin-1")
        self.assertTrue(r.set(key, value))
        self.assertEqual(r.get(key), value)
        self.assertEqual(r.mget(key, k("nope")), [value, None])
        with r.pipeline(transaction=False) as p:
            for b in range(256):
                p.set(k("b").encode() + bytes([b]), bytes([b]))
            for b in range(256):
                p.get(k("b").encode() + bytes([b]))
            results = p.execute()
        self.assertEqual(results[256:], [bytes([b]) for b in range(256)])

    def test_large_values(self):
        r, k = self.r, self.key
        mib = os.urandom(1_000_000)
        self.assertTrue(r.set(k("mib"), mib))
        self.assertEqual(r.get(k("mib")), mib)
        limit = os.urandom(VALUE_LIMIT)
        self.assertTrue(r.set(k("limit"), limit))
        self.assertEqual(r.get(k("limit")), limit)
        with self.assertRaises(redis.ResponseError) as caught:
            r.set(k("limit"), limit + b"x")
        self.assertEqual(str(caught.exception), "value too long")
        self.assertEqual(r.get(k("limit")), limit, "the old value stays")

    def test_errors(self):
        r, k = self.r, self.key
        cases = [
            (("FLUSHALL",), "unknown command 'FLUSHALL'"),
            (("LPUSH", k("l"), "x"), "unknown command 'LPUSH'"),
            (("GET",), "wrong number of arguments for 'get' command"),
            (("SET", k("a"), "v", "NX", "XX"), "syntax error"),
            (("SET", k("a"), "v", "EX", "0"), "invalid expire time in 'set' command"),
            (("SET", k("a"), "v", "EX", "ten"), "value is not an integer or out of range"),
            (("SELECT", 1), "DB index is out of range"),
            (("SET", "k" * 1025, "v"), "key too long"),
        ]
        for command, text in cases:
            with self.subTest(command=command[:2]):
                with self.assertRaises(redis.ResponseError) as caught:
                    r.execute_command(*command)
                self.assertEqual(str(caught.exception), text)
        self.assertTrue(r.ping(), "the connection stays usable")
        self.assertIsNone(r.get(k("a")))

    def test_one_store_with_memcached_and_kvio_frames(self):
        r, k = self.r, self.key
        mc = Memcache(address("KVIO_MEMCACHE"), connect_timeout=TIMEOUT, timeout=TIMEOUT)
        kvio = [os.environ["KVIO_BIN"], "--addr", os.environ["KVIO_ADDR"]]
        r.set(k("from-redis"), "one")
        self.assertEqual(mc.get(k("from-redis")), b"one")
        self.assertTrue(mc.set(k("from-mc"), b"two", noreply=False))
        self.assertEqual(r.get(k("from-mc")), b"two")
        got = subprocess.run(
            [kvio[0], "get", k("from-mc"), *kvio[1:]], capture_output=True, text=True, timeout=TIMEOUT, check=True
        )
        self.assertEqual(got.stdout, "two\n")
        subprocess.run([kvio[0], "put", k("from-kvio"), "three", *kvio[1:]], capture_output=True, timeout=TIMEOUT, check=True)
        self.assertEqual(r.get(k("from-kvio")), b"three")
        self.assertEqual(mc.get(k("from-kvio")), b"three")
        mc.close()


if __name__ == "__main__":
    unittest.main()
