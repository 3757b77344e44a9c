#!/usr/bin/env python3
"""Idle-session memory of an SMTP front: used by benches/smtp-compare.sh.

    idle_sessions.py HOST PORT COUNT PID [ehlo|mail]

Opens COUNT SMTP sessions to HOST:PORT one after another, reads the greeting,
sends EHLO (and in `mail` mode also MAIL FROM, which makes mxgate connect to a
member), waits for each reply, then holds all of them open and reads VmRSS of
PID from /proc before and after. Prints one line:

    mode=ehlo sessions=5000 rss_before_kib=... rss_after_kib=... per_session_kib=...

Bounded: COUNT <= 20000, every socket operation times out after 10 s, only
127.0.0.0/8 addresses are accepted, and every socket is closed at the end.
"""

import ipaddress
import resource
import socket
import sys
import time

MAX_SESSIONS = 20000
TIMEOUT = 10.0


def vm_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def read_reply(sock: socket.socket, buf: bytearray) -> bytes:
    """Reads one (possibly multi-line) SMTP reply; returns its last line."""
    while True:
        while b"\r\n" in buf:
            end = buf.index(b"\r\n")
            line = bytes(buf[:end])
            del buf[: end + 2]
            if len(line) < 4 or line[3:4] != b"-":
                return line
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("connection closed by the server")
        buf += chunk


def expect(sock: socket.socket, buf: bytearray, code: bytes) -> None:
    line = read_reply(sock, buf)
    if not line.startswith(code):
        raise RuntimeError(f"expected {code.decode()}, got {line!r}")


def open_session(host: str, port: int, mode: str) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = bytearray()
    expect(sock, buf, b"220")
    sock.sendall(b"EHLO idle.bench.example\r\n")
    expect(sock, buf, b"250")
    if mode == "mail":
        sock.sendall(b"MAIL FROM:<idle@bench.example>\r\n")
        expect(sock, buf, b"250")
    return sock


def main() -> int:
    if len(sys.argv) not in (5, 6):
        print(__doc__, file=sys.stderr)
        return 2
    host, port, count, pid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    mode = sys.argv[5] if len(sys.argv) == 6 else "ehlo"
    if mode not in ("ehlo", "mail"):
        print(f"unknown mode {mode}", file=sys.stderr)
        return 2
    if not ipaddress.ip_address(host).is_loopback:
        print("only loopback addresses are allowed", file=sys.stderr)
        return 2
    if not 0 < count <= MAX_SESSIONS:
        print(f"COUNT must be 1..{MAX_SESSIONS}", file=sys.stderr)
        return 2
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = count + 64
    if soft < want:
        if hard != resource.RLIM_INFINITY and hard < want:
            print(f"RLIMIT_NOFILE hard limit {hard} < {want}", file=sys.stderr)
            return 1
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

    # Warm up: a few sessions opened and closed, so one-off allocations
    # (runtime, first-use buffers) are in the baseline, not in the per-session figure.
    for _ in range(20):
        open_session(host, port, mode).close()
    time.sleep(0.5)
    before = vm_rss_kib(pid)
    sockets = []
    try:
        for i in range(count):
            try:
                sockets.append(open_session(host, port, mode))
            except (OSError, RuntimeError) as e:
                raise SystemExit(f"session {i + 1} of {count} ({mode}): {e}") from e
        time.sleep(1.0)
        after = vm_rss_kib(pid)
    finally:
        for s in sockets:
            s.close()
    per = (after - before) / count
    print(
        f"mode={mode} sessions={count} rss_before_kib={before} "
        f"rss_after_kib={after} per_session_kib={per:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
