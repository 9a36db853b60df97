#!/usr/bin/env python3
"""A TCP proxy on loopback that delays every chunk, for a WAN-like round trip.

    delay_proxy.py serve --target-port P --rtt-ms 20 --ready-file F [--echo] [--parent PID]
    delay_proxy.py measure --port E [--count 20]

serve: listens on 127.0.0.1 (a port the kernel picks) and forwards each connection to
127.0.0.1:P. Every chunk read from either side is stamped when it arrives and written
to the other side at arrival + rtt/2, in order; nothing waits for an earlier chunk to be
acknowledged, so the delay adds latency without limiting throughput (up to MAX_QUEUED
bytes in flight per direction). An end of file is passed on (half close) after the same
delay; a connection ends when both directions have, or when either side fails. With
--echo a second listener behaves the same but forwards to an echo service inside this
process, so the delay can be measured through the very same event loop. Once listening,
writes "<forward port> <echo port or 0>" to the ready file (atomically). Ends on SIGTERM
or SIGINT, closing every connection, and by itself once the --parent process is gone.

measure: connects to an echo port of the proxy and times COUNT sequential 32-byte
request/response exchanges; prints "median min max" in milliseconds.

Standard library only; 127.0.0.1 only.
"""
import argparse
import asyncio
import os
import signal
import socket
import statistics
import sys
import time

HOST = "127.0.0.1"
CHUNK = 256 * 1024
MAX_QUEUED = 64 * 1024 * 1024  # bytes delayed in one direction before reading pauses


def nodelay(writer):
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


class Pipe:
    """One direction of a connection: read, stamp, queue; write each chunk when due."""

    def __init__(self, reader, writer, delay):
        self.reader, self.writer, self.delay = reader, writer, delay
        self.queue = asyncio.Queue()
        self.queued = 0
        self.room = asyncio.Event()
        self.room.set()

    async def read(self):
        loop = asyncio.get_running_loop()
        try:
            while True:
                await self.room.wait()
                data = await self.reader.read(CHUNK)
                self.queue.put_nowait((loop.time() + self.delay, data))
                if not data:
                    return
                self.queued += len(data)
                if self.queued > MAX_QUEUED:
                    self.room.clear()
        except (ConnectionError, OSError):
            self.queue.put_nowait((loop.time(), None))  # reset: no delay for the failure

    async def write(self):
        loop = asyncio.get_running_loop()
        while True:
            due, data = await self.queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if data is None:
                raise ConnectionResetError("the other side failed")
            if not data:
                if self.writer.can_write_eof():
                    self.writer.write_eof()
                return
            self.writer.write(data)
            self.queued -= len(data)
            if self.queued <= MAX_QUEUED:
                self.room.set()
            await self.writer.drain()


class Proxy:
    def __init__(self, delay):
        self.delay = delay
        self.tasks = set()
        self.writers = set()

    async def handle(self, c_reader, c_writer, port):
        self.writers.add(c_writer)
        nodelay(c_writer)
        s_writer = None
        try:
            s_reader, s_writer = await asyncio.open_connection(HOST, port)
            self.writers.add(s_writer)
            nodelay(s_writer)
            up, down = Pipe(c_reader, s_writer, self.delay), Pipe(s_reader, c_writer, self.delay)
            parts = [asyncio.ensure_future(c) for c in (up.read(), up.write(), down.read(), down.write())]
            try:
                writers_done = asyncio.gather(parts[1], parts[3])
                await writers_done
            finally:
                for p in parts:
                    p.cancel()
                await asyncio.gather(*parts, return_exceptions=True)
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass
        finally:
            for w in (c_writer, s_writer):
                if w is not None:
                    self.writers.discard(w)
                    w.close()
                    try:
                        await w.wait_closed()
                    except (ConnectionError, OSError, asyncio.CancelledError):
                        pass

    def server(self, port):
        def accept(r, w):
            t = asyncio.ensure_future(self.handle(r, w, port))
            self.tasks.add(t)
            t.add_done_callback(self.tasks.discard)

        return asyncio.start_server(accept, HOST, 0, backlog=512)

    async def close(self):
        for t in list(self.tasks):
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for w in list(self.writers):
            w.close()


async def echo(reader, writer):
    nodelay(writer)
    try:
        while True:
            data = await reader.read(CHUNK)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def serve(args):
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, stop.set)
    proxy = Proxy(args.rtt_ms / 2000.0)
    servers = [await proxy.server(args.target_port)]
    echo_port = 0
    if args.echo:
        echo_server = await asyncio.start_server(echo, HOST, 0)
        servers.append(echo_server)
        servers.append(await proxy.server(echo_server.sockets[0].getsockname()[1]))
        echo_port = servers[-1].sockets[0].getsockname()[1]
    tmp = args.ready_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{servers[0].sockets[0].getsockname()[1]} {echo_port}\n")
    os.rename(tmp, args.ready_file)

    async def watch_parent():
        while True:
            await asyncio.sleep(1)
            try:
                os.kill(args.parent, 0)
            except ProcessLookupError:
                stop.set()
                return
            except PermissionError:
                pass

    watcher = asyncio.ensure_future(watch_parent()) if args.parent else None
    await stop.wait()
    if watcher:
        watcher.cancel()
    for s in servers:
        s.close()
    await proxy.close()
    for s in servers:
        await s.wait_closed()


async def measure(args):
    reader, writer = await asyncio.open_connection(HOST, args.port)
    nodelay(writer)
    msg = b"x" * 32
    times = []
    try:
        for _ in range(args.count):
            t0 = time.perf_counter()
            writer.write(msg)
            await writer.drain()
            got = b""
            while len(got) < len(msg):
                data = await asyncio.wait_for(reader.read(len(msg) - len(got)), 10)
                if not data:
                    raise SystemExit("delay_proxy measure: the connection closed")
                got += data
            times.append((time.perf_counter() - t0) * 1000)
    finally:
        writer.close()
    print(f"{statistics.median(times):.1f} {min(times):.1f} {max(times):.1f}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--target-port", type=int, required=True)
    s.add_argument("--rtt-ms", type=float, default=20.0)
    s.add_argument("--ready-file", required=True)
    s.add_argument("--echo", action="store_true")
    s.add_argument("--parent", type=int, default=0)
    m = sub.add_parser("measure")
    m.add_argument("--port", type=int, required=True)
    m.add_argument("--count", type=int, default=20)
    args = p.parse_args()
    asyncio.run(serve(args) if args.cmd == "serve" else measure(args))


if __name__ == "__main__":
    sys.exit(main())
