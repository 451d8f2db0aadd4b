#!/usr/bin/env python3
"""Measures two coordinator faults against real processes on 127.0.0.1 (stdlib only).

1. Hijack through Redis: a node registers, a coordinator watches Redis; then someone who can
   write to Redis but has no CLUSTER_SECRET names a listener of theirs as a node, every way the
   registry format allows: the legacy `SET rr:nodes:x URL`, an unsigned `rr:registry` field, and
   the node's own signed registration copied with its URL swapped. 30 client requests go through
   the coordinator, then `GET /admin/nodes`. Reported: client requests and admin tokens that
   reached the listeners.
2. Attempt timeouts against a hung node (accepts, reads, never answers a POST) beside a live
   node, round robin, REQUEST_TIMEOUT_MS=400: after 10 requests, the hung node's `in_flight` in
   `GET /admin/nodes` and how many of its connections the coordinator closed.

Usage: membership_probe.py COORDINATOR_BIN NODE_BIN MODEL_DIR
"""

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request

TOKEN = "probe-admin-token"
SECRET = "probe-cluster-secret"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Listener:
    """An HTTP listener recording (method, path, authorization); hangs on POST when `hang`."""

    def __init__(self, hang=False):
        self.seen, self.hung, self.closed = [], 0, 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _record(self):
                outer.seen.append(
                    (self.command, self.path, self.headers.get("authorization"))
                )
                length = int(self.headers.get("content-length") or 0)
                if length:
                    self.rfile.read(length)

            def _answer(self, body):
                data = body.encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._record()
                self._answer('{"status":"ok"}' if self.path == "/health" else "{}")

            def do_POST(self):
                self._record()
                if not hang:
                    self._answer("[]")
                    return
                outer.hung += 1
                self.connection.settimeout(60)
                try:
                    while self.connection.recv(1024):
                        pass
                except OSError:
                    return
                outer.closed += 1
                self.close_connection = True

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def client_requests(self):
        return sum(1 for m, p, _ in self.seen if m == "POST")

    def got_token(self):
        return any(TOKEN in (a or "") for _, _, a in self.seen)


def start(binary, port, env):
    full = dict(os.environ, PORT=str(port), HOST="127.0.0.1", RUST_LOG="error", **env)
    proc = subprocess.Popen([binary], env=full, stdout=subprocess.DEVNULL)
    for _ in range(600):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                if r.status == 200:
                    return proc
        except Exception:
            time.sleep(0.2)
    raise SystemExit(f"{binary} on {port} never became healthy")


def call(url, body=None, token=None, method=None):
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, None


def redis(port, *args):
    out = subprocess.run(
        ["redis-cli", "-p", str(port), *args], capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def hijack(coordinator_bin, node_bin, model):
    rport = free_port()
    procs = [subprocess.Popen(["redis-server", "--port", str(rport), "--save", "", "--appendonly", "no"],
                              stdout=subprocess.DEVNULL)]
    try:
        time.sleep(0.5)
        rurl = f"redis://127.0.0.1:{rport}/0"
        common = {"REDIS_ENABLED": "true", "REDIS_URL": rurl, "CLUSTER_SECRET": SECRET,
                  "ADMIN_TOKEN": TOKEN}
        nport, cport = free_port(), free_port()
        procs.append(start(node_bin, nport, dict(common, MODEL_PATH=model)))
        procs.append(start(coordinator_bin, cport, dict(common, HEALTH_CHECK_INTERVAL_MS="200")))
        base = f"http://127.0.0.1:{cport}"
        for _ in range(100):
            _, ring = call(f"{base}/admin/ring", token=TOKEN)
            if ring and ring.get("shares"):
                break
            time.sleep(0.2)
        legacy, unsigned, swapped = Listener(), Listener(), Listener()
        redis(rport, "SET", "rr:nodes:x", legacy.url, "EX", "600")
        redis(rport, "HSET", "rr:registry", "x", unsigned.url)
        signed = redis(rport, "HGETALL", "rr:registry").splitlines()
        genuine = next((v for v in signed[1::2] if v.startswith("v1.")), None)
        if genuine:
            import base64
            _, payload, mac = genuine.split(".")
            reg = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            reg["url"], reg["node_id"] = swapped.url, "swapped"
            forged = base64.urlsafe_b64encode(json.dumps(reg).encode()).decode().rstrip("=")
            redis(rport, "HSET", "rr:registry", "swapped", f"v1.{forged}.{mac}")
        time.sleep(2.5)
        ok = 0
        for i in range(30):
            status, _ = call(f"{base}/rerank", {"query": f"hijack probe {i}", "texts": ["a", "b"]})
            ok += status == 200
        _, listed = call(f"{base}/admin/nodes", token=TOKEN)
        members = [n["id"] for n in (listed or {}).get("nodes", [])]
        print(f"hijack: {ok}/30 client requests answered 200; members: {members}")
        for name, l in [("legacy rr:nodes:x", legacy), ("unsigned rr:registry field", unsigned),
                        ("signed registration, URL swapped", swapped)]:
            print(f"  {name:34s} client requests received: {l.client_requests():2d}/30, "
                  f"admin token received: {'YES' if l.got_token() else 'no'}")
    finally:
        for p in procs:
            p.kill()


def hung_node(coordinator_bin, node_bin, model):
    procs = []
    try:
        nport, cport = free_port(), free_port()
        procs.append(start(node_bin, nport, {"MODEL_PATH": model}))
        hung = Listener(hang=True)
        procs.append(start(coordinator_bin, cport, {
            "COORDINATOR_NODES": f"http://127.0.0.1:{nport},{hung.url}",
            "ROUTING": "round_robin", "REQUEST_TIMEOUT_MS": "400",
            "HEALTH_CHECK_INTERVAL_MS": "100", "ADMIN_TOKEN": TOKEN}))
        base = f"http://127.0.0.1:{cport}"
        ok, started = 0, time.time()
        for i in range(10):
            status, _ = call(f"{base}/rerank", {"query": f"q{i}", "texts": ["a", "b"]})
            ok += status == 200
        took = time.time() - started
        for wait in (1, 5):
            time.sleep(wait if wait == 1 else 4)
            _, listed = call(f"{base}/admin/nodes", token=TOKEN)
            hung_id = hung.url.split("//")[1]
            in_flight = next((n["in_flight"] for n in listed["nodes"] if n["id"] == hung_id), None)
            print(f"hung node, {wait}s after 10 requests ({ok}/10 answered 200 in {took:.1f}s): "
                  f"in_flight {in_flight}; POSTs it received {hung.hung}, connections closed "
                  f"by the coordinator {hung.closed}")
    finally:
        for p in procs:
            p.kill()


if __name__ == "__main__":
    coordinator_bin, node_bin, model = sys.argv[1:4]
    hijack(coordinator_bin, node_bin, model)
    hung_node(coordinator_bin, node_bin, model)
