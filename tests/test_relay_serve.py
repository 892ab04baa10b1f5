"""``e2ee relay serve``'s process set-up: asyncio socket reads are limited to 64 KiB, below
glibc's mmap threshold (see :func:`e2ee.relay.serve.limit_socket_reads`); bad options and an
unopenable database end it with the README's exit status and one error line."""

from __future__ import annotations

import asyncio
import socket
from asyncio import selector_events
from pathlib import Path
from typing import Any

import pytest

from e2ee.cli.main import main
from e2ee.relay import serve as relay_serve
from e2ee.relay import tickets

AUTHORITY_HEX = tickets.authority_public_key(bytes(range(32))).hex()

TRANSPORT: Any = getattr(selector_events, "_SelectorSocketTransport")
ASYNCIO_DEFAULT = 256 * 1024


def _chunk_sizes(total: int) -> list[int]:
    """The sizes of the reads an asyncio transport makes of ``total`` bytes that are all
    waiting in the socket before it reads at all."""
    sizes: list[int] = []

    class Recorder(asyncio.Protocol):
        def __init__(self, done: asyncio.Future[None]) -> None:
            self.done = done

        def data_received(self, data: bytes) -> None:
            sizes.append(len(data))
            if sum(sizes) >= total and not self.done.done():
                self.done.set_result(None)

    async def main() -> None:
        reader, writer = socket.socketpair()
        with reader, writer:
            writer.setblocking(False)  # all of it fits in the socket buffers, or this fails
            assert writer.send(b"x" * total) == total  # and nothing is read yet
            loop = asyncio.get_running_loop()
            done: asyncio.Future[None] = loop.create_future()
            transport, _ = await loop.connect_accepted_socket(lambda: Recorder(done), reader)
            try:
                await asyncio.wait_for(done, 10)
            finally:
                transport.close()

    asyncio.run(main())
    return sizes


def test_socket_reads_are_limited_to_64_kib(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(TRANSPORT, "max_size", ASYNCIO_DEFAULT)  # restored afterwards
    total = 100 * 1024
    assert max(_chunk_sizes(total)) > relay_serve.SOCKET_READ_SIZE  # one read took it all
    relay_serve.limit_socket_reads()
    assert TRANSPORT.max_size == relay_serve.SOCKET_READ_SIZE == 64 * 1024
    sizes = _chunk_sizes(total)
    assert sum(sizes) == total
    assert max(sizes) <= relay_serve.SOCKET_READ_SIZE


def test_a_smaller_read_size_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(TRANSPORT, "max_size", 4096)
    relay_serve.limit_socket_reads()
    assert TRANSPORT.max_size == 4096


def test_a_python_whose_transports_differ_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(selector_events, "_SelectorSocketTransport")
    relay_serve.limit_socket_reads()  # nothing to change, and no error
    monkeypatch.undo()
    monkeypatch.setattr(TRANSPORT, "max_size", "256 KiB")  # not an int: not ours to judge
    relay_serve.limit_socket_reads()
    assert TRANSPORT.max_size == "256 KiB"


def test_serve_limits_socket_reads_before_uvicorn_starts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import logging

    import uvicorn

    monkeypatch.setattr(logging, "basicConfig", lambda **kwargs: None)  # the test's own logging
    monkeypatch.setattr(TRANSPORT, "max_size", ASYNCIO_DEFAULT)
    seen: list[int] = []
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: seen.append(TRANSPORT.max_size))
    assert relay_serve.serve("127.0.0.1", 1, str(tmp_path / "relay.sqlite")) == 0
    assert seen == [relay_serve.SOCKET_READ_SIZE]


@pytest.fixture
def no_server(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """uvicorn.run replaced by a recorder: the relay is built but never served."""
    import logging

    import uvicorn

    monkeypatch.setattr(logging, "basicConfig", lambda **kwargs: None)
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: calls.append(kwargs))
    return calls


def test_serve_names_its_http_stack_and_bounds_the_request_head(
    no_server: list[dict[str, Any]], tmp_path: Path
) -> None:
    """[REQ-RL-37] uvicorn's "auto" picks httptools whenever it is importable (uvicorn's
    "standard" extra), and that parser buffers headers without a limit: the relay names h11,
    with the spec's 16 KiB bound, and asyncio's loop, whatever else is installed."""
    assert main(["relay", "serve", "--db", str(tmp_path / "relay.sqlite")]) == 0
    (options,) = no_server
    assert options["http"] == "h11"
    assert options["h11_max_incomplete_event_size"] == 16 * 1024
    assert options["loop"] == "asyncio"


def test_the_fast_stack_bounds_the_head_in_its_own_protocol(
    no_server: list[dict[str, Any]], tmp_path: Path
) -> None:
    """[REQ-RL-37] ``--stack fast`` runs a subclass of uvicorn's httptools protocol (which has
    no head bound of its own), on uvloop."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    db = str(tmp_path / "relay.sqlite")
    assert main(["relay", "serve", "--db", db, "--stack", "fast"]) == 0
    (options,) = no_server
    assert issubclass(options["http"], HttpToolsProtocol)
    assert options["http"] is not HttpToolsProtocol
    assert options["loop"] == "uvloop"


@pytest.mark.parametrize("missing", ["uvicorn.protocols.http.httptools_impl", "uvloop"])
def test_the_fast_stack_without_its_extra_is_one_line_and_exit_status_1(
    no_server: list[dict[str, Any]],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    missing: str,
) -> None:
    """README, exit codes: a stack whose packages are not installed is "any other error", said
    in one line, before the database is created."""
    import sys

    monkeypatch.setitem(sys.modules, missing, None)
    db = tmp_path / "relay.sqlite"
    assert main(["relay", "serve", "--db", str(db), "--stack", "fast"]) == 1
    assert capsys.readouterr().err == (
        "e2ee relay serve: the fast stack needs the fast extra: pip install 'e2ee[fast]'\n"
    )
    assert no_server == []
    assert not db.exists()


@pytest.mark.parametrize(
    ("name", "bad", "good"),
    [
        ("--port", "70000", "65535"),  # 70000 was an OverflowError traceback from bind
        ("--port", "-1", "0"),
        ("--claim-rate", "nan", "0.5"),  # NaN turned claim rate limiting off
        ("--claim-rate", "0", "0.001"),  # 0: ZeroDivisionError in claims and in the sweeper
        ("--claim-rate", "-1", "2"),
        ("--claim-rate", "inf", "1e6"),
        ("--claim-rate", "1e-320", "1e-6"),  # a bucket of 50 would take forever to refill
        ("--claim-burst", "0", "1"),  # no claim would ever pass
        ("--registration-key", "00" * 32, AUTHORITY_HEX),  # not a point of the curve's group
        ("--registration-key", AUTHORITY_HEX[:-2], AUTHORITY_HEX),
        ("--registration-key", "zz" * 32, AUTHORITY_HEX),
    ],
)
def test_a_bad_option_value_is_a_usage_error(
    no_server: list[dict[str, Any]],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    name: str,
    bad: str,
    good: str,
) -> None:
    """README, exit codes: 2 is a bad command line. The nearest good value still serves."""
    db = str(tmp_path / "relay.sqlite")
    assert main(["relay", "serve", "--db", db, name, good]) == 0
    assert len(no_server) == 1
    with pytest.raises(SystemExit) as exit_info:
        main(["relay", "serve", "--db", db, name, bad])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith(f"e2ee relay serve: error: argument {name}: ")
    assert "Traceback" not in err
    assert len(no_server) == 1


def test_the_registration_key_reaches_the_relays_configuration(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """[REQ-RL-39] ``--registration-key`` configures the authority; without it the relay is
    open."""
    configs: list[Any] = []

    def record(*args: Any, **kwargs: Any) -> int:
        configs.append(kwargs["config"])
        return 0

    monkeypatch.setattr(relay_serve, "serve", record)
    db = str(tmp_path / "relay.sqlite")
    assert main(["relay", "serve", "--db", db, "--registration-key", AUTHORITY_HEX.upper()]) == 0
    assert main(["relay", "serve", "--db", db]) == 0
    assert [c.registration_key for c in configs] == [bytes.fromhex(AUTHORITY_HEX), None]


def test_an_unopenable_database_is_one_line_and_exit_status_1(
    no_server: list[dict[str, Any]], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """README, exit codes: 1 is any other error, with a one-line reason on stderr (it was a
    RelayUnavailableError traceback)."""
    status = main(["relay", "serve", "--db", str(tmp_path / "no-such-dir" / "relay.sqlite")])
    assert status == 1
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err == "e2ee relay serve: relay database cannot be opened\n"
    assert no_server == []


def test_an_address_it_cannot_listen_on_is_one_line_and_exit_status_1(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """README, exit codes: uvicorn exits 3 when it cannot start, which the README reserves for
    "relay unreachable"; a relay that cannot listen is "any other error" (1), with one line of
    its own after uvicorn's log line."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status = main(
            ["relay", "serve", "--port", str(port), "--db", str(tmp_path / "relay.sqlite")]
        )
    assert status == 1
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == f"e2ee relay serve: cannot listen on 127.0.0.1:{port}"
    assert "Traceback" not in err


def test_the_reason_it_cannot_serve_is_printed_cleaned(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The reason names operator input (here a --host holding ESC and a newline, which the
    resolver refuses): like every other CLI output that may hold foreign text it goes through
    e2ee.terminal.clean, so it is one line of visible escapes that sends the terminal nothing
    (it printed the ESC as it was and turned the newline into a space)."""
    host = "bad\x1b[2Jhost\nx"
    db = str(tmp_path / "relay.sqlite")
    status = main(["relay", "serve", "--host", host, "--port", "0", "--db", db])
    assert status == 1
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == "e2ee relay serve: cannot listen on bad\\x1b[2Jhost\\nx:0"
    assert err.endswith("\n")
    assert all(line.isprintable() for line in err.splitlines())
