#!/usr/bin/env python3
"""Thread-pool starvation probe (standard library only), driven by loadtests/run.sh.

While --blockers connections keep the server's handlers asleep on their pool threads (GET /block?ms=N, re-fired as
soon as each answers, for --seconds), a trivial GET /plaintext goes out every --interval seconds on one of
--keepalive pre-opened keep-alive connections (round robin over the free ones), and another on a new connection.
Each probe's latency runs from its scheduled tick to the end of its response: a probe that finds every keep-alive
connection still busy waits for one, and that wait counts (a client would see it too). A probe not answered within
--timeout seconds of its tick counts as a timeout.

Prints one JSON object: {"keepalive_ms": [...], "new_connection_ms": [...], ...}; a timeout or an error is null.
"""
import argparse, json, queue, socket, sys, threading, time


def read_response(sock):
    """Reads one HTTP/1.1 response with a Content-Length body; returns the status code."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed before the response head")
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed inside the response body")
        body += chunk
    return status


def request(sock, host, port, path):
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    status = read_response(sock)
    if status != 200:
        raise ConnectionError(f"{path}: status {status}")


def connect(host, port, timeout):
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class Probe:
    def __init__(self, a):
        self.a = a
        self.stop_blocking = threading.Event()
        self.lock = threading.Lock()
        self.keepalive = []          # (tick index, latency ms or None)
        self.new_connection = []
        self.blocked_done = 0
        self.errors = []
        self.free = queue.Queue()

    def error(self, what, e):
        with self.lock:
            if len(self.errors) < 20:
                self.errors.append(f"{what}: {type(e).__name__}: {e}")

    def blocker(self):
        a = self.a
        sock = None
        while not self.stop_blocking.is_set():
            try:
                if sock is None:
                    sock = connect(a.host, a.port, a.block_ms / 1000 + a.timeout)
                request(sock, a.host, a.port, f"/block?ms={a.block_ms}")
                with self.lock:
                    self.blocked_done += 1
            except OSError as e:
                self.error("blocker", e)
                if sock is not None:
                    sock.close()
                sock = None
                time.sleep(0.1)
        if sock is not None:
            sock.close()

    def keepalive_probe(self, tick, due):
        deadline = due + self.a.timeout
        try:
            sock = self.free.get(timeout=max(deadline - time.monotonic(), 0.001))
        except queue.Empty:
            self.record(self.keepalive, tick, None)
            return
        try:
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            request(sock, self.a.host, self.a.port, "/plaintext")
            self.record(self.keepalive, tick, (time.monotonic() - due) * 1000)
            self.free.put(sock)
        except OSError as e:
            self.error("keep-alive probe", e)
            self.record(self.keepalive, tick, None)
            sock.close()
            try:
                self.free.put(connect(self.a.host, self.a.port, self.a.timeout))
            except OSError:
                pass

    def new_connection_probe(self, tick, due):
        try:
            with connect(self.a.host, self.a.port, self.a.timeout) as sock:
                sock.settimeout(max(due + self.a.timeout - time.monotonic(), 0.001))
                request(sock, self.a.host, self.a.port, "/plaintext")
            self.record(self.new_connection, tick, (time.monotonic() - due) * 1000)
        except OSError as e:
            self.error("new-connection probe", e)
            self.record(self.new_connection, tick, None)

    def record(self, where, tick, ms):
        with self.lock:
            where.append((tick, ms))

    def run(self):
        a = self.a
        for _ in range(a.keepalive):
            sock = connect(a.host, a.port, a.timeout)
            request(sock, a.host, a.port, "/plaintext")  # the connection is really served before the clock starts
            self.free.put(sock)
        blockers = [threading.Thread(target=self.blocker, daemon=True) for _ in range(a.blockers)]
        for t in blockers:
            t.start()
        probes = []
        start = time.monotonic()
        ticks = int(a.seconds / a.interval)
        for tick in range(ticks):
            due = start + tick * a.interval
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            for target in (self.keepalive_probe, self.new_connection_probe):
                t = threading.Thread(target=target, args=(tick, due), daemon=True)
                t.start()
                probes.append(t)
        self.stop_blocking.set()
        for t in probes:
            t.join(timeout=a.timeout + 5)
        elapsed = time.monotonic() - start
        with self.lock:
            return {
                "seconds": a.seconds, "interval_s": a.interval, "blockers": a.blockers, "block_ms": a.block_ms,
                "keepalive_connections": a.keepalive, "timeout_s": a.timeout, "elapsed_s": round(elapsed, 2),
                "blocked_requests_answered": self.blocked_done,
                "keepalive_ms": [ms for _, ms in sorted(self.keepalive, key=lambda x: x[0])],
                "new_connection_ms": [ms for _, ms in sorted(self.new_connection, key=lambda x: x[0])],
                "errors": self.errors,
            }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--seconds", type=float, default=15.0, help="how long the blockers are re-fired and probes sent")
    ap.add_argument("--blockers", type=int, default=64)
    ap.add_argument("--block-ms", type=int, default=3000)
    ap.add_argument("--keepalive", type=int, default=32, help="pre-opened keep-alive connections for the probes")
    ap.add_argument("--interval", type=float, default=0.1, help="seconds between two probes of each kind")
    ap.add_argument("--timeout", type=float, default=30.0, help="a probe unanswered this long after its tick times out")
    a = ap.parse_args()
    try:
        result = Probe(a).run()
    except OSError as e:
        sys.exit(f"starvation: cannot set up the keep-alive connections on port {a.port}: {e}")
    json.dump(result, sys.stdout)
    print()


if __name__ == "__main__":
    main()
