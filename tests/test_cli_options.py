"""Values on the command line are untrusted input: ``e2ee conformance run`` refuses a timeout
or restart count that cannot work with exit status 2, a bad command line (README, exit codes),
instead of running forever. (``e2ee relay serve``'s options: tests/test_relay_serve.py.)"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from e2ee.cli.main import main
from e2ee.conformance import runner
from e2ee.relay.tickets import authority_public_key


class _Ok:
    ok = True


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The runner replaced by a recorder: no adapter is started."""
    calls: list[dict[str, Any]] = []

    def record(command: list[str], **kwargs: Any) -> _Ok:
        calls.append(kwargs)
        return _Ok()

    monkeypatch.setattr(runner, "run", record)
    return calls


@pytest.mark.parametrize(
    ("name", "bad", "good", "value"),
    [
        # A NaN timeout never expires: a silent adapter hung the run forever.
        ("--timeout", "nan", "0.5", 0.5),
        ("--startup-timeout", "nan", "30", 30.0),
        ("--timeout", "0", "0.001", 0.001),
        ("--timeout", "-3", "3", 3.0),
        ("--timeout", "inf", "86400", 86400.0),
        # Finite, but beyond what a thread can wait for: OverflowError from the queue.
        ("--timeout", "1e308", "86400", 86400.0),
        ("--startup-timeout", "86400.5", "86400", 86400.0),
        ("--max-restarts", "-1", "0", 0),
    ],
)
def test_conformance_run_refuses_a_timeout_or_restart_count_that_cannot_work(
    runs: list[dict[str, Any]],
    capsys: pytest.CaptureFixture[str],
    name: str,
    bad: str,
    good: str,
    value: float,
) -> None:
    adapter = ["--", sys.executable, "-c", "pass"]
    key = name[2:].replace("-", "_")
    assert main(["conformance", "run", name, good, *adapter]) == 0
    assert len(runs) == 1
    assert runs[0][key] == value
    assert type(runs[0][key]) is type(value)
    with pytest.raises(SystemExit) as exit_info:
        main(["conformance", "run", name, bad, *adapter])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith(f"e2ee conformance run: error: argument {name}: ")
    assert "Traceback" not in err
    assert len(runs) == 1


@pytest.mark.parametrize(
    "argv",
    [
        ["init", "--ticket", "t", "--name", "alice"],  # --ticket resumes: no new name
        ["init", "--ticket", "t", "--relay", "http://127.0.0.1:1"],
        ["init", "--name", "alice"],  # neither --relay nor --ticket
        ["init", "--relay", "http://127.0.0.1:1"],
    ],
)
def test_init_takes_relay_and_name_or_a_ticket_alone(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    assert main(["--home", str(home), *argv]) == 2
    assert capsys.readouterr().err.startswith("e2ee: init ")
    assert not home.exists()


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("86401", "must be an integer from 1 to 86400"),  # a relay refuses a longer ticket
        ("0", "must be an integer from 1 to 86400"),
        ("1h", "is not an integer"),
    ],
)
def test_relay_ticket_lifetime_is_capped_by_the_relays_maximum(
    bad: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "t.ticket"
    argv = [
        "relay", "ticket", "--key", str(tmp_path / "k"), "--origin", "http://127.0.0.1:1",
        "--user", "alice", "--user-key", authority_public_key(bytes(32)).hex(),
        "--out", str(out), "--lifetime", bad,
    ]  # fmt: skip
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("bad", ["inf", "1e300", "nan", "-1", "0", "86400.5", "soon"])
def test_receive_idle_is_a_bounded_positive_number_of_seconds(
    bad: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--idle`` took any float: "inf" and "1e300" ended in an OverflowError traceback from
    the WebSocket wait, "nan" never stopped, a negative value was taken. Now it is read like
    ``conformance run --timeout``: above 0, at most a day, else exit status 2 before the home
    is opened."""
    home = tmp_path / "home"
    with pytest.raises(SystemExit) as exit_info:
        main(["--home", str(home), "receive", "--follow", "--idle", bad])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("e2ee receive: error: argument --idle: ")
    assert "Traceback" not in err
    assert not home.exists()
