#!/usr/bin/env python3
"""Times new connections against an HTTP server: connect, one GET, its complete response, close; one at a time.

Prints p50/p90/p99/max of the round trips in milliseconds. Run it beside idle_holder.py (which holds thousands of
idle connections open) to see what accepting costs at that many open descriptors, e.g.:

    python3 loadtests/idle_holder.py --port 5000 --count 16000 --path / &   # wait for "ready 16000"
    python3 loadtests/accept_latency.py --port 5000 --count 2000
"""
import argparse, socket, statistics, time


def round_trip(host, port, request):
    start = time.perf_counter()
    with socket.create_connection((host, port), timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(request)
        buf = b""
        while True:
            data = s.recv(65536)
            if not data:
                raise RuntimeError("the server closed the connection before answering")
            buf += data
            head_end = buf.find(b"\r\n\r\n")
            if head_end < 0:
                continue
            length = 0
            for line in buf[:head_end].decode("latin-1").split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            if len(buf) >= head_end + 4 + length:
                break
    return (time.perf_counter() - start) * 1000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--path", default="/")
    a = ap.parse_args()
    request = f"GET {a.path} HTTP/1.1\r\nHost: {a.host}:{a.port}\r\n\r\n".encode()
    for _ in range(a.warmup):
        round_trip(a.host, a.port, request)
    times = sorted(round_trip(a.host, a.port, request) for _ in range(a.count))
    q = statistics.quantiles(times, n=100)
    print(f"{a.count} connect+first-response round trips: p50 {q[49]:.3f} ms, p90 {q[89]:.3f} ms, "
          f"p99 {q[98]:.3f} ms, max {times[-1]:.3f} ms", flush=True)


if __name__ == "__main__":
    main()
