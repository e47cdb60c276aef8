#!/usr/bin/env python3
"""Time to first byte of a streamed reply: N sequential GETs on one keep-alive connection, each
timed from the request's send to the arrival of its first body byte of an event (`data:`), then
read to the end. Prints `median_ms p90_ms n`. Used by benches/load/proxy.sh.

    ttfb.py http://127.0.0.1:PORT/path N [HEADER: value]
"""
import socket
import statistics
import sys
import time
from urllib.parse import urlsplit


def main():
    url, n = urlsplit(sys.argv[1]), int(sys.argv[2])
    extra = "".join(h + "\r\n" for h in sys.argv[3:])
    req = f"GET {url.path} HTTP/1.1\r\nHost: {url.netloc}\r\n{extra}\r\n".encode()
    s = socket.create_connection((url.hostname, url.port), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        s.sendall(req)
        buf, first = b"", None
        while True:
            chunk = s.recv(65536)
            if not chunk:
                sys.exit("connection closed")
            buf += chunk
            head, sep, body = buf.partition(b"\r\n\r\n")
            if first is None and sep and b"data:" in body:
                first = time.perf_counter()
            if sep and body.endswith(b"0\r\n\r\n"):
                break
        if not head.startswith(b"HTTP/1.1 200") or b"[DONE]" not in body:
            sys.exit(f"unexpected reply: {buf[:300]!r}")
        times.append((first - t0) * 1000)
    times.sort()
    print(f"{statistics.median(times):.3f} {times[int(len(times) * 0.9)]:.3f} {len(times)}")


main()
