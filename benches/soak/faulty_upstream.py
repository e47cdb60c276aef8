#!/usr/bin/env python3
"""The soak's second loopback upstream: an OAuth2 token endpoint and injected faults.

    faulty_upstream.py STALL_SECONDS      prints `listening on 127.0.0.1:PORT`

- POST /token: an OAuth2 client-credentials reply (for the soak's oauth2 credential).
- /reset: reads the request and resets the connection (RST) without a reply.
- /reset_body: sends the head (Content-Length 1000) and 10 bytes, then resets.
- /truncate: sends the head (Content-Length 1000) and 10 bytes, then closes cleanly.
- /stall: reads the request and sends nothing for STALL_SECONDS (past the server's fetch timeout).
- anything else: 200 with a small JSON body.
Loopback only; one thread per connection.
"""
import socket
import struct
import sys
import threading
import time

STALL = float(sys.argv[1]) if len(sys.argv) > 1 else 5.0
TOKEN = b'{"access_token":"soak-oauth-access-token-0123456789","token_type":"bearer","expires_in":3600}'
OK = b'{"ok":true}'


def reply(conn, status, body, ctype=b"application/json"):
    conn.sendall(b"HTTP/1.1 " + status + b"\r\ncontent-type: " + ctype + b"\r\ncontent-length: "
                 + str(len(body)).encode() + b"\r\n\r\n" + body)


def rst(conn):
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def read_request(conn, buf):
    while b"\r\n\r\n" not in buf:
        chunk = conn.recv(65536)
        if not chunk:
            return None, b""
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v.strip())
    while len(rest) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return None, b""
        rest += chunk
    return head.split(b"\r\n")[0], rest[length:]


def serve(conn):
    buf = b""
    try:
        while True:
            line, buf = read_request(conn, buf)
            if line is None:
                conn.close()
                return
            path = line.split(b" ")[1].split(b"?")[0]
            if path == b"/token":
                reply(conn, b"200 OK", TOKEN)
            elif path == b"/reset":
                rst(conn)
                return
            elif path in (b"/reset_body", b"/truncate"):
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                             b"content-length: 1000\r\n\r\n{\"partial\":")
                time.sleep(0.05)
                if path == b"/reset_body":
                    rst(conn)
                else:
                    conn.close()
                return
            elif path == b"/stall":
                time.sleep(STALL)
                conn.close()
                return
            else:
                reply(conn, b"200 OK", OK)
    except OSError:
        conn.close()


def main():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(128)
    print(f"listening on 127.0.0.1:{s.getsockname()[1]}", flush=True)
    while True:
        conn, _ = s.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
