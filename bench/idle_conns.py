#!/usr/bin/env python3
"""Resident memory of a proxy per idle client connection (used by bench/idle.sh).

Opens COUNT connections to 127.0.0.1:PORT; each sends one complete request, reads the whole
response and then stays open and idle (it only answers HTTP/2 PINGs and reads what the
server sends, as an idle browser connection would). The proxy's VmRSS (/proc/PID/status) is
read before the first connection and once all are open, then every connection is closed and
VmRSS is read again 5 s and 30 s later. Modes:

  plain  HTTP/1.1 (`GET /`, keep-alive)
  tls    HTTP/1.1 over TLS 1.3 (ALPN http/1.1)
  h2c    HTTP/2 with prior knowledge: the preface, an empty SETTINGS frame and one HEADERS
         frame (HPACK: indexed :method GET, :scheme, :path /, literal :authority)
  h2     the same over TLS 1.3 with ALPN h2

Connections come from several source addresses (127.0.0.2, 127.0.0.3, ...; at most
PER_SOURCE each) so that tens of thousands to one port do not run out of ephemeral ports.
Only the standard library; bounded in time (--timeout for opening, then fixed waits).

Usage: idle_conns.py --port 9200 --pid PID --mode plain --count 10000
Prints progress and a last line `RESULT key=value ...` for bench/idle.sh.
"""

import argparse
import asyncio
import os
import resource
import signal
import socket
import ssl
import struct
import sys
import time

IP_BIND_ADDRESS_NO_PORT = 24  # linux/in.h: pick the source port at connect(), per 4-tuple
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
H2_DATA, H2_HEADERS, H2_SETTINGS, H2_PING, H2_GOAWAY = 0x0, 0x1, 0x4, 0x6, 0x7
FLAG_END_STREAM, FLAG_ACK, FLAG_END_HEADERS, FLAG_PADDED, FLAG_PRIORITY = 0x1, 0x1, 0x4, 0x8, 0x20


class PeerClosed(Exception):
    pass


def h2_frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def h2_request(scheme, authority):
    auth = authority.encode()
    block = bytes([0x82, 0x87 if scheme == "https" else 0x86, 0x84, 0x01, len(auth)]) + auth
    return (H2_PREFACE + h2_frame(H2_SETTINGS, 0, 0)
            + h2_frame(H2_HEADERS, FLAG_END_STREAM | FLAG_END_HEADERS, 1, block))


def vm_rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def established_on(port):
    """Established TCP sockets whose local port is `port` (the proxy's accepted side)."""
    n = 0
    want = f":{port:04X}"
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split(None, 4)
            if fields[1].endswith(want) and fields[3] == "01":
                n += 1
    return n


class Conn:
    __slots__ = ("sock", "ssl", "inc", "out", "h2", "buf", "closed", "status")

    def __init__(self, sock, ctx):
        self.sock = sock
        self.ssl = self.inc = self.out = None
        if ctx is not None:
            self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
            self.ssl = ctx.wrap_bio(self.inc, self.out, server_hostname="localhost")
        self.h2 = False
        self.buf = bytearray()
        self.closed = False
        self.status = 0


class Client:
    def __init__(self, args):
        self.a = args
        self.loop = asyncio.get_running_loop()
        self.ctx = None
        if args.mode in ("tls", "h2"):
            self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            self.ctx.check_hostname = False
            self.ctx.verify_mode = ssl.CERT_NONE
            self.ctx.minimum_version = ssl.TLSVersion.TLSv1_3
            self.ctx.set_alpn_protocols(["h2"] if args.mode == "h2" else ["http/1.1"])
        scheme = "https" if self.ctx else "http"
        authority = f"127.0.0.1:{args.port}"
        if args.mode in ("h2c", "h2"):
            self.request = h2_request(scheme, authority)
        else:
            self.request = f"GET / HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode()
        self.conns = []
        self.failed = 0
        self.bad_status = 0
        self.peer_closed = 0
        self.errors = {}
        self.samples = []

    # ---- one connection, driven by coroutines until its response is read ----
    async def send(self, c, data):
        if c.ssl:
            c.ssl.write(data)
            data = c.out.read()
        await self.loop.sock_sendall(c.sock, data)

    async def recv(self, c):
        while True:
            if c.ssl:
                try:
                    data = c.ssl.read(65536)
                    if not data:
                        raise PeerClosed()
                    return data
                except ssl.SSLWantReadError:
                    pass
                except ssl.SSLZeroReturnError:
                    raise PeerClosed()
                pending = c.out.read()
                if pending:
                    await self.loop.sock_sendall(c.sock, pending)
            raw = await self.loop.sock_recv(c.sock, 65536)
            if not raw:
                raise PeerClosed()
            if not c.ssl:
                return raw
            c.inc.write(raw)

    async def handshake(self, c):
        while True:
            try:
                c.ssl.do_handshake()
                break
            except ssl.SSLWantReadError:
                pending = c.out.read()
                if pending:
                    await self.loop.sock_sendall(c.sock, pending)
                raw = await self.loop.sock_recv(c.sock, 65536)
                if not raw:
                    raise PeerClosed()
                c.inc.write(raw)
        pending = c.out.read()
        if pending:
            await self.loop.sock_sendall(c.sock, pending)

    async def read_h1(self, c):
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += await self.recv(c)
        head, rest = buf.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        c.status = int(lines[0].split(b" ", 2)[1])
        length, chunked = 0, False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value.strip())
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if chunked:
            while not rest.endswith(b"0\r\n\r\n"):
                rest += await self.recv(c)
        else:
            while len(rest) < length:
                rest += await self.recv(c)

    async def read_h2(self, c):
        c.h2 = True
        done = False
        while not done:
            c.buf += await self.recv(c)
            for kind, flags, stream, payload in self.frames(c):
                if kind == H2_SETTINGS and not flags & FLAG_ACK:
                    await self.send(c, h2_frame(H2_SETTINGS, FLAG_ACK, 0))
                elif kind == H2_PING and not flags & FLAG_ACK:
                    await self.send(c, h2_frame(H2_PING, FLAG_ACK, 0, payload))
                elif kind == H2_GOAWAY:
                    raise PeerClosed()
                elif stream == 1 and kind == H2_HEADERS and c.status == 0:
                    block = payload
                    if flags & FLAG_PADDED:
                        block = block[1:]
                    if flags & FLAG_PRIORITY:
                        block = block[5:]
                    # :status 200 from the static table is the usual first field.
                    c.status = 200 if block[:1] == b"\x88" else -1
                if stream == 1 and kind in (H2_DATA, H2_HEADERS) and flags & FLAG_END_STREAM:
                    done = True

    @staticmethod
    def frames(c):
        out = []
        while len(c.buf) >= 9:
            length = int.from_bytes(c.buf[0:3], "big")
            if len(c.buf) < 9 + length:
                break
            kind, flags = c.buf[3], c.buf[4]
            stream = int.from_bytes(c.buf[5:9], "big") & 0x7FFFFFFF
            out.append((kind, flags, stream, bytes(c.buf[9:9 + length])))
            del c.buf[:9 + length]
        return out

    async def open_one(self, i):
        src = f"127.0.0.{2 + i // self.a.per_source}"
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((src, 0))
            c = Conn(sock, self.ctx)

            async def run():
                await self.loop.sock_connect(sock, ("127.0.0.1", self.a.port))
                if c.ssl:
                    await self.handshake(c)
                await self.send(c, self.request)
                if self.a.mode in ("h2c", "h2"):
                    await self.read_h2(c)
                else:
                    await self.read_h1(c)

            await asyncio.wait_for(run(), self.a.conn_timeout)
        except (OSError, PeerClosed, asyncio.TimeoutError, ssl.SSLError, ValueError, IndexError) as e:
            self.failed += 1
            key = type(e).__name__ + (f"({e.errno})" if isinstance(e, OSError) and e.errno else "")
            self.errors[key] = self.errors.get(key, 0) + 1
            if len(self.samples) < 3:
                self.samples.append(f"{key}: {e}")
            sock.close()
            return None
        if c.status != 200:
            self.bad_status += 1
        self.loop.add_reader(sock.fileno(), self.on_readable, c)
        return c

    # ---- idle: read what arrives, answer PINGs, notice a close ----
    def on_readable(self, c):
        try:
            raw = c.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            raw = b""
        data = raw
        if raw and c.ssl:
            c.inc.write(raw)
            data = b""
            try:
                while True:
                    chunk = c.ssl.read(65536)
                    if not chunk:
                        raw = b""
                        break
                    data += chunk
            except ssl.SSLWantReadError:
                pass
            except (ssl.SSLError, ssl.SSLZeroReturnError):
                raw = b""
        if not raw:
            self.loop.remove_reader(c.sock.fileno())
            c.closed = True
            self.peer_closed += 1
            return
        if c.h2 and data:
            c.buf += data
            reply = b""
            for kind, flags, _stream, payload in self.frames(c):
                if kind == H2_PING and not flags & FLAG_ACK:
                    reply += h2_frame(H2_PING, FLAG_ACK, 0, payload)
                elif kind == H2_SETTINGS and not flags & FLAG_ACK:
                    reply += h2_frame(H2_SETTINGS, FLAG_ACK, 0)
            if reply:
                if c.ssl:
                    c.ssl.write(reply)
                    reply = c.out.read()
                try:
                    c.sock.send(reply)
                except OSError:
                    pass

    async def open_all(self):
        next_i = 0
        deadline = time.monotonic() + self.a.timeout

        async def worker():
            nonlocal next_i
            while next_i < self.a.count and time.monotonic() < deadline:
                i = next_i
                next_i += 1
                c = await self.open_one(i)
                if c is not None:
                    self.conns.append(c)

        await asyncio.gather(*(worker() for _ in range(min(self.a.concurrency, self.a.count))))
        return next_i < self.a.count

    def close_all(self):
        for c in self.conns:
            if not c.closed:
                self.loop.remove_reader(c.sock.fileno())
            c.sock.close()
        self.conns = []


async def main(a):
    client = Client(a)
    print(f"mode={a.mode} port={a.port} pid={a.pid} count={a.count} "
          f"sources={(a.count + a.per_source - 1) // a.per_source}", flush=True)
    # One connection first, so the proxy has its upstream connection and TLS state.
    warm = Client(argparse.Namespace(**{**vars(a), "count": 1, "concurrency": 1}))
    await warm.open_all()
    if warm.failed or not warm.conns:
        print(f"RESULT error=warm-up-failed errors={warm.errors}", flush=True)
        return 1
    warm.close_all()
    await asyncio.sleep(1)
    before = vm_rss_kb(a.pid)
    t0 = time.monotonic()
    timed_out = await client.open_all()
    took = time.monotonic() - t0
    open_n = len(client.conns)
    print(f"opened {open_n} in {took:.1f}s (failed {client.failed} {client.errors}"
          f"{', stopped at the time limit' if timed_out else ''})", flush=True)
    for sample in client.samples:
        print(f"  error: {sample}", flush=True)
    await asyncio.sleep(a.settle)
    at_open = vm_rss_kb(a.pid)
    server_est = established_on(a.port)
    alive = open_n - client.peer_closed
    per_conn = (at_open - before) / alive if alive else float("nan")
    print(f"rss before {before} KiB, with {alive} idle connections {at_open} KiB: "
          f"{per_conn:.2f} KiB per connection (proxy side established: {server_est}, "
          f"closed by the proxy: {client.peer_closed}, non-200: {client.bad_status})", flush=True)
    client.close_all()
    w1, w2 = a.waits
    await asyncio.sleep(w1)
    after5 = vm_rss_kb(a.pid)
    est5 = established_on(a.port)
    await asyncio.sleep(w2 - w1)
    after30 = vm_rss_kb(a.pid)
    print(f"rss {w1:g} s after close {after5} KiB (established {est5}), {w2:g} s after {after30} KiB",
          flush=True)
    print(f"RESULT mode={a.mode} count={a.count} open={alive} failed={client.failed} "
          f"peer_closed={client.peer_closed} non200={client.bad_status} server_est={server_est} "
          f"open_s={took:.1f} before_kb={before} open_kb={at_open} per_conn_kib={per_conn:.2f} "
          f"after5_kb={after5} after30_kb={after30}", flush=True)
    return 0


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--pid", type=int, required=True, help="the proxy process whose VmRSS is read")
    p.add_argument("--mode", choices=("plain", "tls", "h2c", "h2"), default="plain")
    p.add_argument("--count", type=int, default=10000)
    p.add_argument("--concurrency", type=int, default=100, help="connections being opened at once")
    p.add_argument("--per-source", type=int, default=10000, help="connections per source address")
    p.add_argument("--conn-timeout", type=float, default=10.0, help="seconds to open one and get its response")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to open them all")
    p.add_argument("--settle", type=float, default=2.0, help="seconds between the last open and the reading")
    p.add_argument("--waits", default="5,30", help="seconds after the close to read VmRSS, twice")
    a = p.parse_args()
    a.waits = tuple(float(x) for x in a.waits.split(","))
    return a


if __name__ == "__main__":
    args = parse_args()
    want = args.count + 1000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(want, soft), max(want, hard)))
        except (ValueError, OSError):
            sys.exit(f"need {want} open files, the limit is {soft}/{hard}: raise ulimit -n")
    # A hard bound whatever happens: opening, the settle, the waits after the close, and slack.
    signal.alarm(int(args.timeout + args.settle + args.waits[1] + 90))
    sys.exit(asyncio.run(main(args)))
