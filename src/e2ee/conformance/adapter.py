"""The runner's side of the pipe: start the adapter, send requests, wait for responses.

Every wait has a deadline, so an adapter that hangs, crashes, writes garbage or closes its
output costs one failed request, never a hung run. After such a failure the process is killed
(its whole process group on POSIX) and started afresh, with a new ``hello``, for the next
request, at most ``max_restarts`` times; after that every further request fails at once.

Threads, not ``select``: one reads stdout lines into a short queue (a full queue makes it, and
so the adapter, wait; once the runner expects nothing more from a process, lines are read and
dropped), one writes requests (so a huge request to an adapter that stopped reading cannot
block the runner), one keeps the tail of stderr for the failure messages. What the runner
holds of an adapter's output is therefore bounded, however much it writes.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import reprlib
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from typing import IO, Any

from e2ee.conformance.protocol import (
    DEFAULT_MAX_RESTARTS,
    DEFAULT_STARTUP_TIMEOUT,
    DEFAULT_TIMEOUT,
    MAX_LINE_BYTES,
    PROTOCOL_NAME,
    PROTOCOL_VERSION,
    encode_line,
)
from e2ee.terminal import clean

JSON = dict[str, Any]
LINE_QUEUE_SIZE = 2
"""Response lines (each at most ``MAX_LINE_BYTES``) read ahead of the runner."""
STDERR_TAIL_BYTES = 4096
"""The end of the adapter's stderr that is kept (for failure messages); the rest is read and
dropped, in chunks, so an adapter writing gigabytes (with or without newlines) costs nothing."""
STDERR_CHUNK_BYTES = 64 * 1024
STDERR_TAIL_LINES = 3
"""Lines of the kept end of stderr shown in a failure message (each cut to ``SHOWN_CHARS``)."""
SHOWN_CHARS = 200
"""Longest piece of adapter (or vector) text the report shows: a name, an error message..."""


def shown(text: str, limit: int = SHOWN_CHARS) -> str:
    """``text`` cut so that the report shows it in at most ``limit`` characters once every
    line is cleaned (controls, ESC, bidi overrides, line separators and backslashes escaped by
    :func:`e2ee.terminal.clean`, which the runner applies to each line it writes, once: clean
    is injective, not idempotent). The cut falls between characters, never inside an escape.
    An adapter's words must not forge or hide report lines."""
    widths = [len(clean(c)) for c in text[: limit + 1]]
    if sum(widths) <= limit and len(text) <= limit:
        return text
    kept, width = 0, 0
    while width + widths[kept] <= limit - 3:
        width += widths[kept]
        kept += 1
    return text[:kept] + "..."


_REPR = reprlib.Repr()
_REPR.maxlevel = 2
_REPR.maxstring = 60
_REPR.maxother = 60
_REPR.maxlong = 60


def brief(value: Any) -> str:
    """A short ``repr`` of a JSON value (an adapter's or a vector's), however long or deep."""
    return shown(_REPR.repr(value))


class ProtocolFailure(Exception):
    """The adapter did not answer a request properly (crash, timeout, malformed response)."""


class AdapterError(Exception):
    """The adapter answered a request with an error (an e2ee or a protocol error category)."""

    def __init__(self, category: str, message: str, code: Any = None) -> None:
        self.category = category
        """As the adapter sent it (compared with the vectors' categories)."""
        self.code = code
        """The error's ``code`` member as the adapter sent it (None when absent): the relay's
        error code, compared with a vector's ``code`` (spec/conformance.md section 4)."""
        self.message = shown(message)
        """Shortened (see :func:`shown`; escaped where printed): only ever shown."""
        name = shown(category)
        super().__init__(f"{name}: {self.message}" if self.message else name)


class _EndOfOutput:
    """Queue marker: the adapter closed its stdout (``reason`` says how)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


class _Process:
    """One running adapter process and its three pipe threads."""

    def __init__(self, command: Sequence[str], env: dict[str, str] | None) -> None:
        posix = os.name == "posix"
        try:
            self.popen = subprocess.Popen(  # noqa: S603 - the user names the adapter to run
                list(command),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                start_new_session=posix,
            )
        except OSError as exc:
            raise ProtocolFailure(f"cannot start the adapter {command[0]!r}: {exc}") from None
        self.lines: queue.Queue[bytes | _EndOfOutput] = queue.Queue(maxsize=LINE_QUEUE_SIZE)
        self.done = threading.Event()
        """Set when the runner expects nothing more: further output is read and dropped."""
        self.outbox: queue.Queue[bytes | None] = queue.Queue()
        self.stderr_tail = bytearray()
        self.stderr_lock = threading.Lock()
        assert self.popen.stdin
        assert self.popen.stdout
        assert self.popen.stderr
        self.threads = [
            threading.Thread(target=target, args=(stream,), daemon=True)
            for target, stream in (
                (self._read, self.popen.stdout),
                (self._write, self.popen.stdin),
                (self._drain, self.popen.stderr),
            )
        ]
        for thread in self.threads:
            thread.start()

    def _put(self, item: bytes | _EndOfOutput) -> None:
        """Hand ``item`` to the runner, waiting while the queue is full; drop it once the
        runner is done with this process."""
        while not self.done.is_set():
            try:
                self.lines.put(item, timeout=0.1)
            except queue.Full:
                continue
            return

    def _read(self, stream: IO[bytes]) -> None:
        with stream:
            try:
                while True:
                    line = stream.readline(MAX_LINE_BYTES + 1)
                    if not line:
                        self._put(_EndOfOutput("closed its output"))
                        return
                    if len(line) > MAX_LINE_BYTES:
                        self._put(_EndOfOutput(f"wrote a line over {MAX_LINE_BYTES} bytes"))
                        return
                    self._put(line)
            except (OSError, ValueError):
                self._put(_EndOfOutput("closed its output"))

    def _write(self, stream: IO[bytes]) -> None:
        try:
            while (data := self.outbox.get()) is not None:
                stream.write(data)
                stream.flush()
        except (OSError, ValueError):
            pass  # the adapter is gone; the reader reports it
        finally:
            with contextlib.suppress(OSError, ValueError):
                stream.close()

    def _drain(self, stream: IO[bytes]) -> None:
        """Read stderr in bounded chunks (never a whole line), keeping only its last bytes."""
        with stream, contextlib.suppress(OSError, ValueError):
            descriptor = stream.fileno()
            while chunk := os.read(descriptor, STDERR_CHUNK_BYTES):
                with self.stderr_lock:
                    self.stderr_tail += chunk
                    del self.stderr_tail[:-STDERR_TAIL_BYTES]

    def describe_exit(self) -> str:
        status = self.popen.poll()
        state = "is still running" if status is None else f"exited with status {status}"
        with self.stderr_lock:
            text = self.stderr_tail.decode("utf-8", "replace")
        tail = [shown(line.strip()) for line in text.splitlines() if line.strip()]
        tail = tail[-STDERR_TAIL_LINES:]
        return state + (f"; stderr: {' | '.join(tail)}" if tail else "")

    def _kill_group(self) -> None:
        """SIGKILL the adapter's process group (POSIX), whether or not its leader is still
        running: a wrapper script that started the real adapter and exited, or anything the
        adapter left behind, must not outlive the run (or keep its pipes open)."""
        if os.name == "posix":
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, signal.SIGKILL)  # the group outlives its leader
        if self.popen.poll() is None:
            with contextlib.suppress(OSError):
                self.popen.kill()

    def kill(self) -> None:
        self.done.set()
        self._kill_group()
        self.outbox.put(None)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=5)
        self._join()

    def _join(self) -> None:
        """Let the pipe threads see end of file and close their streams."""
        for thread in self.threads:
            thread.join(timeout=1)

    def close(self, grace: float) -> None:
        """End of run: close stdin, give the adapter ``grace`` seconds to exit, then kill."""
        self.done.set()
        self.outbox.put(None)
        try:
            self.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.kill()
        else:
            self._kill_group()  # what the adapter started and left running
            self._join()


class Adapter:
    """A conformance adapter reached over its stdin/stdout, restarted when it fails."""

    def __init__(
        self,
        command: Sequence[str],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
        max_restarts: int = DEFAULT_MAX_RESTARTS,
        env: dict[str, str] | None = None,
        areas: Sequence[str] = (),
    ) -> None:
        if not command:
            raise ValueError("no adapter command given")
        self.command = list(command)
        self.timeout = timeout
        self.startup_timeout = startup_timeout
        self.max_restarts = max_restarts
        self.env = env
        self.areas = list(areas)
        self.hello: JSON | None = None
        self.restarts = 0
        self.failures: list[str] = []
        self._process: _Process | None = None
        self._next_id = 1
        self._gave_up: str | None = None

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> JSON:
        """Start the process and exchange ``hello``; returns the adapter's hello result."""
        self._process = _Process(self.command, self.env)
        try:
            result = self._exchange(
                {
                    "op": "hello",
                    "protocol": PROTOCOL_NAME,
                    "version": PROTOCOL_VERSION,
                    "areas": self.areas,
                },
                self.startup_timeout,
            )
        except AdapterError as exc:
            self._discard()
            raise ProtocolFailure(f"hello was refused: {exc}") from None
        except ProtocolFailure:
            self._discard()
            raise
        problem = _check_hello(result)
        if problem:
            self._discard()
            raise ProtocolFailure(f"bad hello: {problem}")
        if self.hello is None:
            self.hello = result
        return result

    def close(self) -> None:
        if self._process is None:
            return
        process, self._process = self._process, None
        try:
            process.outbox.put(encode_line({"id": self._take_id(), "op": "shutdown"}))
            deadline = time.monotonic() + min(self.timeout, 2.0)
            while time.monotonic() < deadline:
                try:
                    item = process.lines.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if isinstance(item, _EndOfOutput) or item.strip():
                    break
        finally:
            process.close(grace=2.0)

    def _discard(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process = None

    # --- requests --------------------------------------------------------------------------

    def call(self, op: str, arguments: JSON) -> JSON:
        """Send one request; its result, or :class:`AdapterError` / :class:`ProtocolFailure`."""
        if self._gave_up is not None:
            raise ProtocolFailure(self._gave_up)
        if self._process is None:
            self._restart()
        request = {**arguments, "op": op}
        try:
            return self._exchange(request, self.timeout)
        except ProtocolFailure as exc:
            self.failures.append(f"{op}: {exc}")
            self._discard()
            raise

    def _restart(self) -> None:
        if self.restarts >= self.max_restarts:
            self._gave_up = (
                f"adapter unavailable: gave up after {self.restarts} restarts "
                f"(last problem: {self.failures[-1] if self.failures else 'none'})"
            )
            raise ProtocolFailure(self._gave_up)
        self.restarts += 1
        try:
            self.start()
        except ProtocolFailure as exc:
            self.failures.append(f"restart: {exc}")
            raise

    def _take_id(self) -> int:
        request_id = self._next_id
        self._next_id += 1
        return request_id

    def _exchange(self, request: JSON, timeout: float) -> JSON:
        process = self._process
        assert process is not None
        request_id = self._take_id()
        try:
            line = encode_line({"id": request_id, **request})
        except (TypeError, ValueError) as exc:  # pragma: no cover - vectors are plain JSON
            raise ProtocolFailure(f"cannot encode the request: {exc}") from None
        process.outbox.put(line)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ProtocolFailure(f"no response within {timeout:g} s")
            try:
                item = process.lines.get(timeout=remaining)
            except queue.Empty:
                raise ProtocolFailure(f"no response within {timeout:g} s") from None
            if isinstance(item, _EndOfOutput):
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.popen.wait(timeout=1)
                raise ProtocolFailure(f"the adapter {item.reason} ({process.describe_exit()})")
            if not item.strip():
                continue
            return _parse_response(item, request_id)


def _parse_response(line: bytes, request_id: int) -> JSON:
    try:
        response = json.loads(line)
    except RecursionError:
        raise ProtocolFailure("response is nested too deep to parse") from None
    except ValueError:
        text = line.decode("utf-8", "replace").strip()
        raise ProtocolFailure(f"response is not JSON: {text[:80]!r}") from None
    if not isinstance(response, dict):
        raise ProtocolFailure("response is not a JSON object")
    response_id = response.get("id")
    if type(response_id) is not int or response_id != request_id:  # JSON true == 1 in Python
        raise ProtocolFailure(f"response id {brief(response_id)}, expected {request_id}")
    has_result, has_error = "result" in response, "error" in response
    if has_result == has_error:
        raise ProtocolFailure("a response has exactly one of 'result' and 'error'")
    if has_error:
        error = response["error"]
        if not isinstance(error, dict) or not isinstance(error.get("category"), str):
            raise ProtocolFailure("'error' must be an object with a string 'category'")
        message = error.get("message", "")
        raise AdapterError(
            error["category"], message if isinstance(message, str) else "", error.get("code")
        )
    result = response["result"]
    if not isinstance(result, dict):
        raise ProtocolFailure("'result' must be a JSON object")
    return result


def _check_hello(result: JSON) -> str | None:
    if result.get("protocol") != PROTOCOL_NAME:
        return f"protocol {brief(result.get('protocol'))}, expected {PROTOCOL_NAME!r}"
    version = result.get("version")
    if type(version) is not int or version != PROTOCOL_VERSION:  # (JSON true == 1 in Python)
        return f"version {brief(version)}, this runner speaks {PROTOCOL_VERSION}"
    capabilities = result.get("capabilities")
    if not isinstance(capabilities, list) or not all(isinstance(c, str) for c in capabilities):
        return "'capabilities' must be a list of strings"
    return None
