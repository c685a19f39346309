#!/usr/bin/env python3
"""A minimal ng client for the media bench: `ng.py ADDR ping` waits (up to
10 s) for rtpengine's pong; `ng.py ADDR list` prints how many calls it holds
(and their Call-IDs on stderr)."""
import random
import socket
import sys
import time


def enc(x):
    if isinstance(x, int):
        return b"i%de" % x
    if isinstance(x, str):
        x = x.encode()
    if isinstance(x, bytes):
        return b"%d:%s" % (len(x), x)
    if isinstance(x, list):
        return b"l" + b"".join(enc(i) for i in x) + b"e"
    return b"d" + b"".join(enc(k) + enc(v) for k, v in x.items()) + b"e"


def dec(b, i=0):
    c = b[i:i + 1]
    if c == b"i":
        j = b.index(b"e", i)
        return int(b[i + 1:j]), j + 1
    if c in (b"l", b"d"):
        i, out = i + 1, []
        while b[i:i + 1] != b"e":
            v, i = dec(b, i)
            out.append(v)
        return (out if c == b"l" else dict(zip(out[::2], out[1::2]))), i + 1
    j = b.index(b":", i)
    n = int(b[i:j])
    return b[j + 1:j + 1 + n].decode(errors="replace"), j + 1 + n


def ask(addr, cmd, timeout=1.0):
    host, port = addr.rsplit(":", 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    cookie = "%x" % random.getrandbits(48)
    s.sendto(cookie.encode() + b" " + enc(cmd), (host, int(port)))
    data, _ = s.recvfrom(65535)
    got, body = data.split(b" ", 1)
    assert got.decode() == cookie
    return dec(body)[0]


addr, what = sys.argv[1], sys.argv[2]
if what == "ping":
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            if ask(addr, {"command": "ping"}, 0.3).get("result") == "pong":
                sys.exit(0)
        except OSError:
            time.sleep(0.1)
    sys.exit("rtpengine at %s does not answer ping" % addr)
calls = ask(addr, {"command": "list", "limit": 100000}).get("calls", [])
print(len(calls))
print(" ".join(calls[:20]), file=sys.stderr)
