#!/usr/bin/env python3
"""Small stdlib-only probes for the stack scripts.

  probe.py free udp|tcp PORT...       exit 1 naming the first port already bound on 127.0.0.1
  probe.py tcp PORT                   exit 0 if something accepts TCP on 127.0.0.1:PORT
  probe.py http URL [USER PASSWORD]   exit 0 on HTTP 200 (basic auth when given)
"""

from __future__ import annotations

import base64
import socket
import sys
import urllib.request


def port_free(proto: str, port: int) -> bool:
    kind = socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as s:
        if kind == socket.SOCK_STREAM:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def tcp_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def http_ok(url: str, user: str | None = None, password: str | None = None) -> bool:
    req = urllib.request.Request(url)
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def main(argv: list[str]) -> int:
    if len(argv) >= 3 and argv[0] == "free":
        for port in argv[2:]:
            if not port_free(argv[1], int(port)):
                print(f"{argv[1]} port {port} on 127.0.0.1 is already in use", file=sys.stderr)
                return 1
        return 0
    if len(argv) == 2 and argv[0] == "tcp":
        return 0 if tcp_open(int(argv[1])) else 1
    if len(argv) in (2, 4) and argv[0] == "http":
        return 0 if http_ok(*argv[1:]) else 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
