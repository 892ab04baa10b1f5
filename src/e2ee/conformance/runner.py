"""``e2ee conformance run -- COMMAND [ARGS...]``: drive an adapter through every vector case.

Each vector file is one *area* (its name without ``.json``). The runner starts the adapter,
exchanges ``hello`` (the adapter announces the areas it implements), then replays every case
of every announced area as requests (:mod:`e2ee.conformance.cases`) and compares the responses
with the vectors. Cases of areas the adapter does not announce are *unsupported*: neither
passed nor failed. Output: one line per area, failure details under it, then as the last line
``N passed, M failed``. The run succeeds when M is 0 and N is not.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from e2ee.conformance.adapter import Adapter, ProtocolFailure, brief, shown
from e2ee.conformance.cases import DRIVERS, Mismatch, case_problem, uses_state
from e2ee.conformance.protocol import (
    AREA_OPS,
    DEFAULT_MAX_RESTARTS,
    DEFAULT_STARTUP_TIMEOUT,
    DEFAULT_TIMEOUT,
    STATE_CAPABILITY,
    area_of,
)
from e2ee.terminal import clean
from e2ee.vectors import files as vector_files
from e2ee.vectors.common import MANIFEST_NAME, default_dir

MAX_REPORTED = 10
"""Failures listed per area unless ``verbose`` (all are counted)."""


@dataclass
class AreaResult:
    area: str
    passed: int = 0
    failed: int = 0
    unsupported: int = 0
    messages: list[str] = field(default_factory=list)

    def fail(self, message: str) -> None:
        self.failed += 1
        self.messages.append(message)

    @property
    def line(self) -> str:
        text = f"{self.area}: {self.passed} passed, {self.failed} failed"
        return text + (f", {self.unsupported} unsupported" if self.unsupported else "")


@dataclass
class Report:
    areas: list[AreaResult] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    """File-level problems (each counts as one failure)."""
    adapter: str = ""
    output_closed: bool = False
    """The report's reader went away before the end (the run was stopped there)."""

    @property
    def passed(self) -> int:
        return sum(a.passed for a in self.areas)

    @property
    def failed(self) -> int:
        return sum(a.failed for a in self.areas) + len(self.problems)

    @property
    def unsupported(self) -> int:
        return sum(a.unsupported for a in self.areas)

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.passed > 0 and not self.output_closed

    @property
    def summary(self) -> str:
        return f"{self.passed} passed, {self.failed} failed"


@dataclass
class VectorFile:
    name: str
    area: str
    data: dict[str, Any]


def _read_manifest(directory: Path) -> dict[str, str]:
    document = vector_files.parse_json(vector_files.read_file(directory, MANIFEST_NAME))
    entries = document.get("files") if isinstance(document, dict) else None
    if not isinstance(entries, dict):
        raise ValueError("'files' is not an object")
    manifest: dict[str, str] = {}
    for name, entry in entries.items():
        digest = entry.get("sha256") if isinstance(entry, dict) else None
        if not isinstance(digest, str):
            raise ValueError(f"no sha256 string for {brief(name)}")
        manifest[name] = digest
    return manifest


def _envelope_problem(data: Any) -> str | None:
    """What keeps ``data`` from being a vector file the runner can walk, or None. Only the
    envelope is checked (file, groups, cases); a case's own members are checked as it runs."""
    if not isinstance(data, dict):
        return "not a JSON object"
    if not isinstance(data.get("schema"), str):
        return "'schema' is not a string"
    groups = data.get("testGroups")
    if not isinstance(groups, list):
        return "'testGroups' is not a list"
    for index, group in enumerate(groups):
        where = f"testGroups[{index}]"
        if not isinstance(group, dict):
            return f"{where} is not an object"
        if not isinstance(group.get("type"), str):
            return f"{where}.type is not a string"
        tests = group.get("tests")
        if not isinstance(tests, list):
            return f"{where}.tests is not a list"
        if not all(isinstance(test, dict) for test in tests):
            return f"{where}.tests holds a member that is not an object"
    return None


def load_vectors(directory: Path, problems: list[str]) -> list[VectorFile]:
    """The vector files of ``directory`` (sorted by name), checked against the manifest.

    Vector files are untrusted input: one that cannot be read (not a regular file, too
    large), parsed (not JSON, nested too deep) or walked (:func:`_envelope_problem`) is a
    file-level problem, and the run goes on with the others.
    """
    manifest: dict[str, str] = {}
    try:
        manifest = _read_manifest(directory)
    except ValueError as exc:  # vector_files.VectorFileError included
        problems.append(f"{MANIFEST_NAME}: unreadable ({shown(str(exc))})")
    files: list[VectorFile] = []
    for path in sorted(directory.glob("*.json")):
        if path.name == MANIFEST_NAME:
            continue
        try:
            raw = vector_files.read_file(directory, path.name)
        except ValueError as exc:  # vector_files.VectorFileError: not read at all
            problems.append(f"{path.name}: unreadable ({shown(str(exc))})")
            continue
        expected = manifest.get(path.name)
        if expected is None:
            problems.append(f"{path.name}: not listed in the manifest")
        elif hashlib.sha256(raw).hexdigest() != expected:
            problems.append(f"{path.name}: sha256 differs from the manifest")
        try:
            data = vector_files.parse_json(raw)
        except ValueError as exc:
            problems.append(f"{path.name}: not a vector file ({shown(str(exc))})")
            continue
        problem = _envelope_problem(data)
        if problem is not None:
            problems.append(f"{path.name}: not a vector file ({problem})")
            continue
        if data["schema"] not in DRIVERS:
            problems.append(f"{path.name}: unknown schema {brief(data['schema'])}")
            continue
        files.append(VectorFile(path.name, area_of(path.name), data))
    if not files:
        problems.append(f"no vector files in {directory}")
    return files


def _cases(vector: VectorFile) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(group, test) for group in vector.data["testGroups"] for test in group["tests"]]


def run(
    command: Sequence[str],
    *,
    vectors: Path | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
    max_restarts: int = DEFAULT_MAX_RESTARTS,
    areas: Sequence[str] = (),
    verbose: bool = False,
    out: Callable[[str], None] = print,
) -> Report:
    """Run every case against the adapter ``command``; prints results, the summary last.

    Every line goes through :func:`e2ee.terminal.clean`: adapter and vector text never
    adds a line (a forged summary) or an escape sequence (hiding the real one). When the
    output is closed (``e2ee conformance run ... | head``) the run stops there, the adapter is
    ended, and the report says :attr:`Report.output_closed` (so it is not ``ok``).
    """
    report = Report()
    try:
        _run(
            report,
            command,
            vectors=vectors,
            timeout=timeout,
            startup_timeout=startup_timeout,
            max_restarts=max_restarts,
            areas=areas,
            verbose=verbose,
            out=_guarded(out),
        )
    except _OutputClosed:
        report.output_closed = True
        if out is print:
            _silence_stdout()
    return report


class _OutputClosed(Exception):
    """Whoever reads the report has gone away."""


def _guarded(out: Callable[[str], None]) -> Callable[[str], None]:
    """``out`` with every line cleaned; printed lines are flushed, so that a closed pipe is
    found at once (and not at exit, as an 'Exception ignored' message)."""

    def write(text: str) -> None:
        try:
            out(clean(text))
            if out is print:
                sys.stdout.flush()
        except BrokenPipeError:
            raise _OutputClosed from None

    return write


def _silence_stdout() -> None:
    """Point stdout at the null device: what is still buffered for the closed pipe is then
    dropped quietly when the interpreter flushes it at exit."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, sys.stdout.fileno())
        finally:
            os.close(null)


def _run(
    report: Report,
    command: Sequence[str],
    *,
    vectors: Path | None,
    timeout: float,
    startup_timeout: float,
    max_restarts: int,
    areas: Sequence[str],
    verbose: bool,
    out: Callable[[str], None],
) -> None:
    directory = default_dir() if vectors is None else vectors
    files = load_vectors(directory, report.problems)
    if areas:
        unknown = sorted(set(areas) - {f.area for f in files})
        for name in unknown:
            report.problems.append(f"--area {name}: no such area in {directory}")
        files = [f for f in files if f.area in areas]
    adapter = Adapter(
        command,
        timeout=timeout,
        startup_timeout=startup_timeout,
        max_restarts=max_restarts,
        areas=[f.area for f in files],
    )
    try:
        hello = adapter.start()
    except ProtocolFailure as exc:
        out(f"adapter: {' '.join(command)}: {exc}")
        for vector in files:
            result = AreaResult(vector.area)
            for _group, test in _cases(vector):
                result.fail(f"tcId {brief(test.get('tcId'))}: no adapter ({exc})")
            report.areas.append(result)
            _print_area(result, verbose, out)
        _finish(report, out)
        return
    capabilities = set(hello["capabilities"])
    implementation = hello.get("implementation")
    report.adapter = shown(implementation if isinstance(implementation, str) else " ".join(command))
    known = {f.area for f in files} | set(AREA_OPS) | {STATE_CAPABILITY}
    unknown_capabilities = sorted(capabilities - known)
    out(
        f"adapter: {report.adapter}; announces {len(capabilities)} capabilities"
        + (f" (unknown, ignored: {brief(unknown_capabilities)})" if unknown_capabilities else "")
    )
    try:
        for vector in files:
            result = _run_file(adapter, vector, capabilities)
            report.areas.append(result)
            _print_area(result, verbose, out)
    finally:
        adapter.close()
    if adapter.restarts or adapter.failures:
        out(f"adapter problems: {len(adapter.failures)}, restarts: {adapter.restarts}")
    _finish(report, out)


def _run_file(adapter: Adapter, vector: VectorFile, capabilities: set[str]) -> AreaResult:
    result = AreaResult(vector.area)
    drivers = DRIVERS[vector.data["schema"]]
    supported = vector.area in capabilities
    for group, test in _cases(vector):
        comment = test.get("comment", "")
        label = f"tcId {brief(test.get('tcId'))} ({_text(comment)})"
        driver = drivers.get(group["type"])
        if driver is None:
            result.fail(f"{label}: group type {brief(group['type'])} unknown for this schema")
            continue
        problem = case_problem(group, test)
        if problem is not None:
            result.fail(f"{label}: unusable vector: {problem}")
            continue
        try:
            if not supported or (
                group["type"] == "ScenarioTest"
                and STATE_CAPABILITY not in capabilities
                and uses_state(group, test)
            ):
                result.unsupported += 1
                continue
            driver(adapter.call, group, test)
        except Mismatch as exc:
            result.fail(f"{label}: {exc}")
        except ProtocolFailure as exc:
            result.fail(f"{label}: adapter failure: {exc}")
        except (KeyError, IndexError, TypeError, ValueError, AttributeError, RecursionError) as exc:
            detail = shown(f"{type(exc).__name__}: {exc}")
            result.fail(f"{label}: unusable response or vector: {detail}")
        else:
            result.passed += 1
    return result


def _text(value: Any) -> str:
    return shown(value) if isinstance(value, str) else brief(value)


def _print_area(result: AreaResult, verbose: bool, out: Callable[[str], None]) -> None:
    out(result.line)
    listed = result.messages if verbose else result.messages[:MAX_REPORTED]
    for message in listed:
        out(f"  FAIL {message}")
    if len(result.messages) > len(listed):
        out(f"  ... and {len(result.messages) - len(listed)} more (--verbose lists all)")


def _finish(report: Report, out: Callable[[str], None]) -> None:
    for problem in report.problems:
        out(f"FAIL {problem}")
    if report.unsupported:
        missing = sorted(a.area for a in report.areas if a.unsupported)
        out(f"unsupported: {report.unsupported} cases ({', '.join(missing)})")
    if report.passed == 0:
        out("no case passed: a run that executes no case fails")
    out(report.summary)
