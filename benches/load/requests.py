#!/usr/bin/env python3
"""N sequential requests on one keep-alive connection; exits non-zero unless every answer is 200.

    requests.py URL N [HEADER: VALUE]... [--post BODY]

Used by benches/load/callgrind.sh to drive a server under valgrind with an exact number of
requests (wrk runs for a duration, not a count). Loopback URLs only.
"""
import http.client
import sys
import urllib.parse


def main() -> None:
    url, n = sys.argv[1], int(sys.argv[2])
    rest = sys.argv[3:]
    body = None
    if "--post" in rest:
        i = rest.index("--post")
        body = rest[i + 1].encode()
        rest = rest[:i] + rest[i + 2 :]
    headers = dict(h.split(": ", 1) for h in rest)
    if body is not None:
        headers.setdefault("Content-Type", "application/json")
    u = urllib.parse.urlsplit(url)
    if u.hostname != "127.0.0.1":
        sys.exit("loopback only")
    target = u.path + (f"?{u.query}" if u.query else "")
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
    for _ in range(n):
        conn.request("POST" if body is not None else "GET", target, body=body, headers=headers)
        r = conn.getresponse()
        r.read()
        if r.status != 200:
            sys.exit(f"status {r.status}")
    conn.close()


if __name__ == "__main__":
    main()
