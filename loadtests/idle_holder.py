#!/usr/bin/env python3
"""Holds N mostly idle keep-alive connections open against an HTTP server.

Opens --count connections, sends one GET on each and reads its complete response (so every connection has really
been served), prints "ready <n>" and then holds them, sending nothing, until SIGTERM/SIGINT. On exit it checks every
connection without blocking and prints "alive <n> of <count>" (a connection the server closed reads EOF), then exits
0 if all are still open, else 1.
"""
import argparse, errno, os, resource, selectors, signal, socket, sys, time


def raise_fd_limit(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        target = hard if hard == resource.RLIM_INFINITY else min(hard, max(need, soft))
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        sys.exit(f"idle_holder: RLIMIT_NOFILE {soft} < {need}; raise ulimit -n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--count", type=int, default=5000)
    ap.add_argument("--path", default="/plaintext")
    ap.add_argument("--timeout", type=float, default=60.0)
    a = ap.parse_args()
    raise_fd_limit(a.count + 64)

    request = f"GET {a.path} HTTP/1.1\r\nHost: {a.host}:{a.port}\r\n\r\n".encode()
    socks = []
    deadline = time.monotonic() + a.timeout
    for i in range(a.count):
        while True:
            try:
                s = socket.create_connection((a.host, a.port), timeout=10)
                break
            except OSError as e:
                # the listen backlog can overflow while thousands connect at once: retry briefly
                if e.errno in (errno.ECONNREFUSED, errno.EAGAIN, errno.ETIMEDOUT) and time.monotonic() < deadline:
                    time.sleep(0.01)
                    continue
                sys.exit(f"idle_holder: connect #{i} failed: {e}")
        s.setblocking(False)
        s.send(request)  # a small request always fits an empty socket buffer
        socks.append(s)

    # Read one complete response per connection (headers + Content-Length body).
    sel = selectors.DefaultSelector()
    pending = {}
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
        pending[s] = b""
    done = 0
    while pending:
        if time.monotonic() > deadline:
            sys.exit(f"idle_holder: only {done} of {a.count} responses within {a.timeout}s")
        for key, _ in sel.select(timeout=1.0):
            s = key.fileobj
            data = s.recv(65536)
            if not data:
                sys.exit("idle_holder: the server closed a connection before answering")
            buf = pending[s] + data
            head_end = buf.find(b"\r\n\r\n")
            if head_end >= 0:
                head = buf[:head_end].decode("latin-1")
                if not head.startswith("HTTP/1.1 200"):
                    sys.exit(f"idle_holder: unexpected response: {head.splitlines()[0]}")
                length = 0
                for line in head.split("\r\n")[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value.strip())
                if len(buf) >= head_end + 4 + length:
                    sel.unregister(s)
                    del pending[s]
                    done += 1
                    continue
            pending[s] = buf
    sel.close()
    print(f"ready {len(socks)}", flush=True)

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    while not stop:
        time.sleep(0.2)

    alive = 0
    for s in socks:
        try:
            data = s.recv(1)
            # b"" = EOF: closed by the server; data = unexpected bytes
            if data:
                alive += 1
        except BlockingIOError:
            alive += 1  # nothing to read: still open
        except OSError:
            pass
    print(f"alive {alive} of {len(socks)}", flush=True)
    for s in socks:
        s.close()
    sys.exit(0 if alive == len(socks) else 1)


if __name__ == "__main__":
    main()
