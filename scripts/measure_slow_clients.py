#!/usr/bin/env python3
"""What slow clients cost a rerank-node: the before/after figures of the HTTP edge work.

usage: scripts/measure_slow_clients.py BINARY N [ENV=VALUE ...]

Starts BINARY on a free port of 127.0.0.1 (HTTP_READ_TIMEOUT_MS=2000 unless given; run from the
workspace root, or pass MODEL_PATH=...), then measures, each bounded in time:
 1. one slow body (a valid head, Content-Length 200, then a byte every 100 ms): what comes back,
    when, and when the node closes the connection (bounded at 30 s);
 2. a slow head (the request line a byte at a time) on a fresh connection, and on a kept-alive
    one after a first request (bounded at 30 s each);
 3. N slow connections (head, then a body byte every 200 ms on each): the node's open file
    descriptors before, at their peak, after 8 s more of trickling with the clients still
    holding their ends, and after the clients close.
"""
import os
import socket
import subprocess
import sys
import time
import urllib.request

binary, n = sys.argv[1], int(sys.argv[2])
env = dict(os.environ, HOST="127.0.0.1", RUST_LOG="warn", HTTP_READ_TIMEOUT_MS="2000")
for kv in sys.argv[3:]:
    key, value = kv.split("=", 1)
    env[key] = value
probe = socket.socket()
probe.bind(("127.0.0.1", 0))
port = probe.getsockname()[1]
probe.close()
env["PORT"] = str(port)


def trickle(conn, data, pace, limit):
    """Sends data a byte every pace seconds while reading; returns (received, first, closed)."""
    conn.settimeout(pace)
    started, received, first, sent = time.time(), b"", None, 0
    while time.time() - started < limit:
        if sent < len(data):
            try:
                conn.send(data[sent:sent + 1])
                sent += 1
            except OSError:
                pass
        try:
            chunk = conn.recv(65536)
            if not chunk:
                return received, first, time.time() - started
            first = first if first is not None else time.time() - started
            received += chunk
        except socket.timeout:
            pass
        except OSError:
            return received, first, time.time() - started
    return received, first, None


def status(received):
    return received.split(b"\r\n", 1)[0].decode(errors="replace") if received else "(nothing)"


def rounded(t):
    return None if t is None else round(t, 2)


proc = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL)
try:
    for _ in range(600):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
            break
        except Exception:
            time.sleep(0.2)

    def fds():
        return len(os.listdir(f"/proc/{proc.pid}/fd"))

    head = (b"POST /rerank HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 200\r\n\r\n")
    conn = socket.create_connection(("127.0.0.1", port))
    conn.sendall(head)
    received, first, closed = trickle(conn, b" " * 199, 0.1, 30)
    body = received.split(b"\r\n\r\n", 1)[1].decode(errors="replace") if b"\r\n\r\n" in received else ""
    print(f"slow body: {status(received)!r} {body!r} after {rounded(first)} s; "
          f"connection closed after {rounded(closed)} s (None: still open at 30 s)")
    conn.close()

    slow_head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 300 + b"\r\n\r\n"
    conn = socket.create_connection(("127.0.0.1", port))
    received, first, closed = trickle(conn, slow_head, 0.1, 30)
    print(f"slow head, fresh connection: {status(received)!r}; closed after {rounded(closed)} s")
    conn.close()
    conn = socket.create_connection(("127.0.0.1", port))
    conn.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.3)
    answer = conn.recv(65536)
    received, first, closed = trickle(conn, slow_head, 0.1, 30)
    print(f"slow head, kept-alive connection after {status(answer)!r}: {status(received)!r}; "
          f"closed after {rounded(closed)} s")
    conn.close()
    time.sleep(1.5)

    base = fds()
    conns = []
    for _ in range(n):
        c = socket.create_connection(("127.0.0.1", port))
        c.sendall(head)
        c.setblocking(False)
        conns.append(c)
    peak = fds()
    stop = time.time() + 8
    while time.time() < stop:
        for c in conns:
            try:
                c.send(b" ")
            except OSError:
                pass
        peak = max(peak, fds())
        time.sleep(0.2)
    after = fds()
    for c in conns:
        c.close()
    time.sleep(1.5)
    print(f"descriptors with {n} slow connections: before {base}, peak {peak}, "
          f"after 8 s more of trickling (clients still open) {after}, "
          f"after the clients closed {fds()}")
finally:
    proc.kill()
    proc.wait()
