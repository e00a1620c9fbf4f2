"""pymemcache against kvio's memcached listener (docs/redis-and-memcached.md,
"memcached"): the text protocol as a real client speaks it.

ci/clients gives the listener's address in KVIO_MEMCACHE (and RESP's in
KVIO_RESP). Every socket has a timeout; every wait for expiry polls
against a deadline.
"""

import os
import time
import unittest

import redis
from pymemcache import serde
from pymemcache.client.base import Client
from pymemcache.exceptions import MemcacheServerError, MemcacheUnknownCommandError

TIMEOUT = 10
# The store's value limit at the default --max-frame-len (1,048,576 - 1,049).
VALUE_LIMIT = 1_047_527


def address(variable):
    host, port = os.environ[variable].rsplit(":", 1)
    return host, int(port)


def client(**kwargs):
    return Client(address("KVIO_MEMCACHE"), connect_timeout=TIMEOUT, timeout=TIMEOUT, **kwargs)


def poll(condition, seconds=5.0, pause=0.01):
    """True once condition() is, False if `seconds` pass first."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(pause)
    return True


class Pymemcache(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.mc = client()

    @classmethod
    def tearDownClass(cls):
        cls.mc.close()

    def setUp(self):
        # Each test's keys start with its name: tests share one server.
        self.p = self.id().rsplit(".", 1)[-1] + ":"

    def key(self, name):
        return self.p + name

    def test_get_set_add_replace_delete(self):
        mc, k = self.mc, self.key
        self.assertIsNone(mc.get(k("a")))
        self.assertTrue(mc.set(k("a"), b"1", noreply=False))
        self.assertEqual(mc.get(k("a")), b"1")
        self.assertFalse(mc.add(k("a"), b"x", noreply=False), "add finds the key")
        self.assertTrue(mc.add(k("b"), b"2", noreply=False))
        self.assertFalse(mc.replace(k("nope"), b"x", noreply=False))
        self.assertTrue(mc.replace(k("b"), b"22", noreply=False))
        self.assertEqual(mc.get_many([k("a"), k("b"), k("nope")]), {k("a"): b"1", k("b"): b"22"})
        self.assertEqual(mc.set_many({k("c"): b"3", k("d"): b"4"}, noreply=False), [])
        self.assertTrue(mc.delete(k("a"), noreply=False))
        self.assertFalse(mc.delete(k("a"), noreply=False))
        self.assertTrue(mc.delete_many([k("b"), k("c")], noreply=False))
        self.assertEqual(mc.get_many([k("a"), k("b"), k("c"), k("d")]), {k("d"): b"4"})

    def test_append_prepend(self):
        mc, k = self.mc, self.key
        mc.set(k("a"), b"mid", noreply=False)
        self.assertTrue(mc.append(k("a"), b">", noreply=False))
        self.assertTrue(mc.prepend(k("a"), b"<", noreply=False))
        self.assertEqual(mc.get(k("a")), b"<mid>")
        self.assertFalse(mc.append(k("nope"), b"x", noreply=False))
        self.assertFalse(mc.prepend(k("nope"), b"x", noreply=False))
        self.assertIsNone(mc.get(k("nope")))

    def test_gets_and_cas(self):
        mc, k = self.mc, self.key
        mc.set(k("a"), b"v", noreply=False)
        value, unique = mc.gets(k("a"))
        self.assertEqual(value, b"v")
        self.assertFalse(mc.cas(k("a"), b"w", int(unique) + 1, noreply=False), "EXISTS: another unique")
        self.assertTrue(mc.cas(k("a"), b"w", unique, noreply=False))
        self.assertFalse(mc.cas(k("a"), b"x", unique, noreply=False), "the unique changed with the write")
        self.assertIsNone(mc.cas(k("nope"), b"x", unique, noreply=False), "NOT_FOUND")
        self.assertEqual(mc.get(k("a")), b"w")
        many = mc.gets_many([k("a"), k("nope")])
        self.assertEqual(list(many), [k("a")])
        self.assertEqual(many[k("a")][0], b"w")

    def test_incr_decr(self):
        mc, k = self.mc, self.key
        mc.set(k("n"), b"9", noreply=False)
        self.assertEqual(mc.incr(k("n"), 1, noreply=False), 10)
        self.assertEqual(mc.get(k("n")), b"10")
        self.assertEqual(mc.decr(k("n"), 3, noreply=False), 7)
        self.assertEqual(mc.decr(k("n"), 100, noreply=False), 0, "decr stops at 0")
        mc.set(k("n"), str(2**64 - 1).encode(), noreply=False)
        self.assertEqual(mc.incr(k("n"), 2, noreply=False), 1, "incr wraps at 2^64")
        self.assertIsNone(mc.incr(k("nope"), 1, noreply=False))
        self.assertIsNone(mc.decr(k("nope"), 1, noreply=False))
        mc.set(k("s"), b"abc", noreply=False)
        with self.assertRaises(Exception) as caught:
            mc.incr(k("s"), 1, noreply=False)
        self.assertIn("cannot increment or decrement non-numeric value", str(caught.exception))

    def test_touch_and_expiry(self):
        mc, k = self.mc, self.key
        mc.set(k("t"), b"v", noreply=False)
        self.assertTrue(mc.touch(k("t"), 100, noreply=False))
        self.assertFalse(mc.touch(k("nope"), 100, noreply=False))
        started = time.monotonic()
        mc.set(k("short"), b"v", expire=1, noreply=False)
        mc.set(k("touched"), b"v", noreply=False)
        mc.touch(k("touched"), 1, noreply=False)
        for name in ("short", "touched"):
            self.assertTrue(poll(lambda: mc.get(k(name)) is None), f"{name} did not expire within 5 s")
            self.assertFalse(mc.touch(k(name), 100, noreply=False), "an expired key is absent")
        self.assertGreaterEqual(time.monotonic() - started, 0.9)
        mc.set(k("past"), b"v", expire=-1, noreply=False)
        self.assertIsNone(mc.get(k("past")), "a negative exptime is already expired")
        mc.set(k("unix"), b"v", expire=int(time.time()) + 100, noreply=False)
        self.assertEqual(mc.get(k("unix")), b"v", "beyond 30 days: a Unix time")
        self.assertEqual(mc.get(k("t")), b"v")

    def test_noreply(self):
        # pymemcache's default: set, add, replace, append, prepend, delete
        # and touch without waiting for an answer; incr and decr wait
        # unless asked not to.
        mc, k = client(default_noreply=True), self.key
        self.assertTrue(mc.set(k("a"), b"1"))
        self.assertTrue(mc.add(k("b"), b"2"))
        self.assertTrue(mc.replace(k("b"), b"3"))
        self.assertTrue(mc.append(k("a"), b"0"))
        self.assertTrue(mc.prepend(k("a"), b"2"))
        self.assertIsNone(mc.incr(k("a"), 1, noreply=True))
        self.assertIsNone(mc.decr(k("a"), 2, noreply=True))
        self.assertTrue(mc.touch(k("a"), 100))
        self.assertTrue(mc.delete(k("b")))
        # The next answer on the same connection is the get's: nothing was left unread.
        self.assertEqual(mc.get_many([k("a"), k("b")]), {k("a"): b"209"})
        mc.close()

    def test_stats_and_version(self):
        mc = self.mc
        self.assertEqual(mc.version(), b"1.6.21")
        stats = mc.stats()
        for name in (b"pid", b"uptime", b"curr_connections", b"cmd_get", b"get_hits", b"curr_items", b"bytes"):
            self.assertIn(name, stats)
        self.assertEqual(stats[b"version"], b"1.6.21")
        self.assertEqual(mc.stats("items"), {}, "stats <group>: an empty END")
        self.assertTrue(mc.quit() is None)
        self.assertEqual(mc.version(), b"1.6.21", "pymemcache reconnects after quit")

    def test_flags_are_stored_with_the_value(self):
        mc, k = client(serde=serde.pickle_serde), self.key
        values = {k("str"): "text", k("int"): 42, k("dict"): {"a": [1, 2]}, k("bytes"): b"\x00\xff"}
        self.assertEqual(mc.set_many(values, noreply=False), [])
        self.assertEqual(mc.get_many(list(values)), values)
        mc.close()

    def test_binary_values(self):
        mc, k = self.mc, self.key
        value = bytes(range(256)) + b"\r\nEND\r\nVALUE x 0 1\r\n" + bytes(reversed(range(256)))
        self.assertTrue(mc.set(k("bin"), value, noreply=False))
        self.assertEqual(mc.get(k("bin")), value)
        self.assertEqual(mc.set_many({k(f"b{b}"): bytes([b]) for b in range(256)}, noreply=False), [])
        self.assertEqual(mc.get_many([k(f"b{b}") for b in range(256)]), {k(f"b{b}"): bytes([b]) for b in range(256)})

    def test_large_values(self):
        mc, k = self.mc, self.key
        mib = os.urandom(1_000_000)
        self.assertTrue(mc.set(k("mib"), mib, noreply=False))
        self.assertEqual(mc.get(k("mib")), mib)
        limit = os.urandom(VALUE_LIMIT)
        self.assertTrue(mc.set(k("limit"), limit, noreply=False))
        self.assertEqual(mc.get(k("limit")), limit)
        with self.assertRaises(MemcacheServerError) as caught:
            mc.set(k("limit"), limit + b"x", noreply=False)
        self.assertIn("object too large for cache", str(caught.exception))
        self.assertEqual(mc.get(k("limit")), limit, "the old value stays; the connection goes on")

    def test_unknown_command(self):
        with self.assertRaises(MemcacheUnknownCommandError):
            self.mc.raw_command(b"flush_all", b"\r\n")
        self.assertEqual(self.mc.version(), b"1.6.21")

    def test_one_store_with_redis(self):
        mc, k = self.mc, self.key
        host, port = address("KVIO_RESP")
        r = redis.Redis(host=host, port=port, protocol=2, socket_timeout=TIMEOUT)
        mc.set(k("m"), b"\xff\x00bin", noreply=False)
        self.assertEqual(r.get(k("m")), b"\xff\x00bin")
        r.set(k("r"), "from redis", ex=100)
        self.assertEqual(mc.get(k("r")), b"from redis")
        self.assertEqual(mc.gets(k("r"))[0], b"from redis")
        r.delete(k("m"))
        self.assertIsNone(mc.get(k("m")))
        r.close()


if __name__ == "__main__":
    unittest.main()
