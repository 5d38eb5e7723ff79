"""The fault tests' brokers, each the test's own: a Redis server, or a RabbitMQ virtual host.

Both offer what the tests do to a broker: ``pending(queue)`` (messages waiting, and delivered
but not acknowledged), ``take(queue)`` (lose a message for good), ``cut()`` and ``restore()``
(an outage and its end), ``close()``.

The machine's RabbitMQ is shared (other test runs, other projects): a test never stops it. It
gets a virtual host of its own, and reaches it through :class:`TcpProxy`, which the test cuts
(every connection dropped, new ones refused) and restores, as a broker outage looks to clients.
A Redis server is started for each test on a free port, so stopping it disturbs nothing else.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from celery import Celery
from kombu.connection import Connection

from tests.conftest import unavailable

RABBITMQ_HOST = os.environ.get("EMAILEVENTS_TEST_RABBITMQ_HOST", "127.0.0.1")
RABBITMQ_PORT = int(os.environ.get("EMAILEVENTS_TEST_RABBITMQ_PORT", "5672"))
RABBITMQ_USER = os.environ.get("EMAILEVENTS_TEST_RABBITMQ_USER", "guest")
RABBITMQ_PASSWORD = os.environ.get("EMAILEVENTS_TEST_RABBITMQ_PASSWORD", "guest")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """A ``redis-server`` of the test's own, on a free port; stop() and start() it at will."""

    name = "redis"

    def __init__(self, directory: Path, *, appendonly: bool = False) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            unavailable("Redis", "no redis-server binary on PATH (apt-get install redis-server)")
        try:
            import redis  # noqa: PLC0415
        except ImportError:
            unavailable("Redis", "the redis client is not installed (pip install -e '.[dev]')")
        self.binary = str(binary)
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.appendonly = appendonly
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--daemonize",
            "no",
            "--dir",
            str(self.directory),
        ]
        # Durable when a test stops it with messages inside, as a production broker must be.
        args += (
            ["--appendonly", "yes", "--appendfsync", "always"]
            if self.appendonly
            else [
                "--appendonly",
                "no",
            ]
        )
        with (self.directory / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(Exception):
                if self.client.ping():
                    return
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
                unavailable("Redis", f"redis-server did not start on port {self.port}: {tail}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self.process = None

    def acl(self, rule: str) -> None:
        """Change what the default user (every client here) may do, as ``ACL SETUSER`` does."""
        self.client.execute_command("ACL", "SETUSER", "default", rule)  # type: ignore[no-untyped-call]

    def pending(self, queue: str) -> tuple[int, int]:
        """Messages waiting in ``queue``, and messages delivered but not acknowledged."""
        return int(self.client.llen(queue)), int(self.client.hlen("unacked"))

    def take(self, queue: str) -> bool:
        """Take the next message out of ``queue`` for good, as a broker that loses it."""
        return self.client.rpop(queue) is not None

    def cut(self) -> None:
        """A broker outage: the server stops (its clients see their connections end)."""
        self.stop()

    def restore(self) -> None:
        self.start()

    def close(self) -> None:
        self.stop()


class TcpProxy:
    """A TCP forwarder on a free local port, to ``upstream``; ``cut()`` and ``restore()`` it.

    One thread accepts and copies bytes both ways for every connection (a selector, no thread
    per connection). ``cut()`` closes every connection at once (the clients see a reset or an
    end of stream, as when a broker dies) and closes the listening socket, so that new
    connections are refused; ``restore()`` listens again on the same port.
    """

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = 0
        self.cuts = 0
        self._listener: socket.socket | None = None
        self._pairs: dict[socket.socket, socket.socket] = {}
        self._selector = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._stopping = False
        self._listen()
        self._thread = threading.Thread(target=self._run, name="tcp-proxy", daemon=True)
        self._thread.start()

    # control, from the test's thread

    def cut(self) -> None:
        """Drop every connection, and refuse new ones until ``restore()``."""
        with self._lock:
            self.cuts += 1
            if self._listener is not None:
                self._selector.unregister(self._listener)
                self._listener.close()
                self._listener = None
            for sock in list(self._pairs):
                self._drop(sock)
        self._wake()

    def restore(self) -> None:
        """Accept connections again, on the same port."""
        deadline = time.monotonic() + 10
        while True:
            try:
                with self._lock:
                    self._listen()
                break
            except OSError:
                # The port is in TIME_WAIT for a moment on some kernels; never taken by another
                # listener while SO_REUSEADDR holds it for us.
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self._wake()

    def close(self) -> None:
        self._stopping = True
        self.cut()
        self._thread.join(5)
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    @property
    def connections(self) -> int:
        return len(self._pairs) // 2

    # the forwarding thread

    def _listen(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.setblocking(False)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._selector.register(listener, selectors.EVENT_READ, "accept")

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def _run(self) -> None:
        while not self._stopping:
            for key, _ in self._selector.select(timeout=0.5):
                with self._lock:
                    if key.data == "wake":
                        with contextlib.suppress(OSError):
                            self._wake_r.recv(4096)
                    elif key.data == "accept":
                        self._accept()
                    else:
                        self._forward(key.fileobj)  # type: ignore[arg-type]

    def _accept(self) -> None:
        if self._listener is None:
            return
        try:
            client, _ = self._listener.accept()
        except (BlockingIOError, OSError):
            return
        try:
            upstream = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            client.close()
            return
        for sock in (client, upstream):
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._pairs[client] = upstream
        self._pairs[upstream] = client
        self._selector.register(client, selectors.EVENT_READ, "data")
        self._selector.register(upstream, selectors.EVENT_READ, "data")

    def _forward(self, sock: socket.socket) -> None:
        peer = self._pairs.get(sock)
        if peer is None:
            return
        try:
            data = sock.recv(65536)
            if data:
                peer.settimeout(5)
                peer.sendall(data)
                peer.setblocking(False)
                return
        except OSError:
            pass
        self._drop(sock)

    def _drop(self, sock: socket.socket) -> None:
        peer = self._pairs.pop(sock, None)
        for s in (sock, peer):
            if s is None:
                continue
            self._pairs.pop(s, None)
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(s)
            with contextlib.suppress(OSError):
                # A reset, not a polite end of stream: what a client sees of a broker that died.
                s.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                )
            s.close()


def _rabbitmqctl(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("rabbitmqctl")
    if binary is None:
        unavailable("RabbitMQ", "no rabbitmqctl on PATH (apt-get install rabbitmq-server)")
    return subprocess.run(  # noqa: S603 - rabbitmqctl, fixed arguments
        [str(binary), "-q", *args], capture_output=True, text=True, timeout=60, check=False
    )


class RabbitBroker:
    """A virtual host of the test's own on the machine's RabbitMQ, reached through a proxy
    that the test cuts for an outage: the machine's broker is never stopped."""

    name = "rabbitmq"

    def __init__(self) -> None:
        with socket.socket() as probe:
            probe.settimeout(2)
            if probe.connect_ex((RABBITMQ_HOST, RABBITMQ_PORT)) != 0:
                unavailable(
                    "RabbitMQ",
                    f"nothing listens on {RABBITMQ_HOST}:{RABBITMQ_PORT} "
                    "(start it: rabbitmq-server -detached)",
                )
        self.vhost = f"emailevents-{uuid.uuid4().hex[:12]}"
        created = _rabbitmqctl("add_vhost", self.vhost)
        if created.returncode != 0:
            unavailable("RabbitMQ", f"rabbitmqctl add_vhost failed: {created.stderr.strip()}")
        allowed = _rabbitmqctl("set_permissions", "-p", self.vhost, RABBITMQ_USER, ".*", ".*", ".*")
        if allowed.returncode != 0:
            self.delete()
            unavailable("RabbitMQ", f"rabbitmqctl set_permissions failed: {allowed.stderr.strip()}")
        self.proxy = TcpProxy((RABBITMQ_HOST, RABBITMQ_PORT))

    @property
    def url(self) -> str:
        """The vhost's URL, through the proxy."""
        return (
            f"amqp://{RABBITMQ_USER}:{RABBITMQ_PASSWORD}@127.0.0.1:{self.proxy.port}/"
            f"{quote(self.vhost, safe='')}"
        )

    def queues(self) -> dict[str, tuple[int, int]]:
        """Every queue of the vhost: (messages ready, messages delivered and not acknowledged)."""
        listed = _rabbitmqctl(
            "list_queues", "-p", self.vhost, "name", "messages_ready", "messages_unacknowledged"
        )
        assert listed.returncode == 0, listed.stderr
        found: dict[str, tuple[int, int]] = {}
        for line in listed.stdout.splitlines():
            parts = line.split("\t")
            if len(parts) == 3 and parts[1].isdigit():
                found[parts[0]] = (int(parts[1]), int(parts[2]))
        return found

    def pending(self, queue: str) -> tuple[int, int]:
        """Messages waiting in ``queue`` or in Celery's delayed-delivery queues (countdowns),
        and messages delivered but not acknowledged."""
        queues = self.queues()
        ready = sum(
            r
            for name, (r, _) in queues.items()
            if name == queue or name.startswith("celery_delayed_")
        )
        return ready, sum(u for _, u in queues.values())

    def take(self, queue: str) -> bool:
        """Take the next message out of ``queue`` for good (``basic.get`` and ``basic.ack``)."""
        with Connection(self.url) as connection, connection.channel() as channel:  # type: ignore[no-untyped-call]
            message = channel.basic_get(queue, no_ack=False)
            if message is None:
                return False
            channel.basic_ack(message.delivery_tag)
            return True

    def cut(self) -> None:
        """A broker outage, as clients see one: every connection reset, new ones refused."""
        self.proxy.cut()

    def restore(self) -> None:
        self.proxy.restore()

    def delete(self) -> None:
        _rabbitmqctl("delete_vhost", self.vhost)

    def close(self) -> None:
        self.proxy.close()
        self.delete()


Broker = RedisServer | RabbitBroker


@contextlib.contextmanager
def celery_on_redis(
    directory: Path, name: str, **conf: Any
) -> Iterator[tuple[Celery, RedisServer]]:
    """A Celery app on a Redis server of its own (in ``directory``), with a queue of its own;
    ``conf`` on top. Its worker runs Celery's event loop (kombu's Redis transport is
    asynchronous)."""
    server = RedisServer(directory)
    server.start()
    suffix = uuid.uuid4().hex[:8]
    app = Celery(f"emailevents-{name}-{suffix}", set_as_current=False)
    app.conf.update(
        broker_url=server.url,
        task_default_queue=f"emailevents-{suffix}",
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        **conf,
    )
    try:
        yield app, server
    finally:
        server.close()
