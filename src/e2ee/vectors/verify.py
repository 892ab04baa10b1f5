"""``e2ee vectors verify [DIR]``: check every vector file against this implementation.

For each file listed in ``MANIFEST.json`` (and any other ``*.json`` beside it): the sha256 must
match the manifest, the envelope must be well formed (known schema, schema and spec version,
``numberOfTests``, tcIds 1..N, every flag explained in ``notes``), and every test case is
recomputed with e2ee's own functions (see :mod:`e2ee.vectors.checks`). The last line printed is
``N passed, M failed`` where N counts the test cases that passed and M the failed cases plus
any file-level problem.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from e2ee.vectors.checks import CHECKS, Group, Test
from e2ee.vectors.common import MANIFEST_NAME, SCHEMA_VERSION, SPEC_VERSION, default_dir
from e2ee.vectors.files import VectorFileError, is_file_name, parse_json, read_file
from e2ee.vectors.outcomes import result_problem
from e2ee.vectors.scenario_play import MAX_OPERATIONS, operations
from e2ee.wire.codec import is_int

MAX_REPORTED = 10
"""Failures listed per file (all are counted)."""
MAX_LINE = 200
"""The longest line printed for a file or a failure (see :func:`_one_line`)."""
SCENARIO_SCHEMA = "e2ee_scenario_schema_v1.json"


@dataclass
class FileResult:
    name: str
    passed: int = 0
    failed: int = 0
    messages: list[str] = field(default_factory=list)

    def fail(self, message: str) -> None:
        self.failed += 1
        self.messages.append(message)


@dataclass
class Report:
    files: list[FileResult] = field(default_factory=list)

    @property
    def passed(self) -> int:
        return sum(f.passed for f in self.files)

    @property
    def failed(self) -> int:
        return sum(f.failed for f in self.files)

    @property
    def summary(self) -> str:
        return f"{self.passed} passed, {self.failed} failed"


def _short(value: Any) -> str:
    """``repr`` of a value read from a file, cut short (messages stay one short line)."""
    text = (
        repr(value) if isinstance(value, str | int | float | bool | None) else type(value).__name__
    )
    return text if len(text) <= 60 else text[:57] + "..."


def _load_manifest(directory: Path, result: FileResult) -> dict[str, str]:
    try:
        manifest = parse_json(read_file(directory, MANIFEST_NAME))
    except VectorFileError as exc:
        result.fail(f"{MANIFEST_NAME} in {directory}: {exc}")
        return {}
    except ValueError as exc:
        result.fail(f"unreadable manifest: {exc}")
        return {}
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        result.fail("unreadable manifest: not an object with a files object")
        return {}
    if not is_int(manifest.get("specVersion"), SPEC_VERSION):
        result.fail(f"manifest specVersion {_short(manifest.get('specVersion'))} != {SPEC_VERSION}")
    files: dict[str, str] = {}
    for name, entry in manifest["files"].items():
        sha256 = entry.get("sha256") if isinstance(entry, dict) else None
        if isinstance(sha256, str):
            files[name] = sha256
        else:
            result.fail(f"{name}: the manifest gives no sha256 string")
    return files


_TOP = ("schema", "schemaVersion", "specVersion", "numberOfTests", "notes", "testGroups")
_RESULTS = ("valid", "invalid", "acceptable")


def _check_envelope(data: Any, result: FileResult) -> list[tuple[Group, Test]] | None:
    """The (group, test) pairs of a well-formed file, in order; None when it is not one (the
    problem is recorded). Fields of single tests are checked by :func:`_case_problem`."""
    if not isinstance(data, dict):
        result.fail("malformed envelope: not a JSON object")
        return None
    missing = [key for key in _TOP if key not in data]
    if missing:
        result.fail(f"malformed envelope: missing {', '.join(missing)}")
        return None
    if not isinstance(data["schema"], str) or data["schema"] not in CHECKS:
        result.fail(f"unknown schema {_short(data['schema'])}")
        return None
    # JSON integers only: json.loads gives True for `true` and 1.0 for `1.0`, and both are
    # == 1 in Python, though the file's JSON schema does not admit them.
    if not is_int(data["schemaVersion"], SCHEMA_VERSION):
        result.fail(f"schemaVersion {_short(data['schemaVersion'])} is not {SCHEMA_VERSION}")
    if not is_int(data["specVersion"], SPEC_VERSION):
        result.fail(f"specVersion {_short(data['specVersion'])} is not {SPEC_VERSION}")
    if not isinstance(data["notes"], dict):
        result.fail("malformed envelope: notes is not an object")
        return None
    groups = data["testGroups"]
    if not isinstance(groups, list):
        result.fail("malformed envelope: testGroups is not an array")
        return None
    cases: list[tuple[Group, Test]] = []
    for index, group in enumerate(groups):
        tests = group.get("tests") if isinstance(group, dict) else None
        if not isinstance(tests, list) or not all(isinstance(test, dict) for test in tests):
            result.fail(f"malformed envelope: testGroups[{index}] has no array of test objects")
            return None
        if not isinstance(group.get("type"), str):
            result.fail(f"malformed envelope: testGroups[{index}] has no type string")
            return None
        cases += [(group, test) for test in tests]
    if not is_int(data["numberOfTests"], len(cases)):
        result.fail(f"numberOfTests {_short(data['numberOfTests'])} but {len(cases)} tests")
    if any(not is_int(test.get("tcId"), n) for n, (_, test) in enumerate(cases, 1)):
        result.fail("tcIds are not 1..N in order")
    flags = {f for _, t in cases if _is_strings(t.get("flags")) for f in t["flags"]}
    unexplained = flags - set(data["notes"])
    if unexplained:
        result.fail(f"flags without notes: {sorted(unexplained)}")
    return cases


def _is_strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _case_problem(group: Group, test: Test) -> str | None:
    """What makes a test object malformed, or its result one its group type cannot check:
    None when nothing."""
    if not isinstance(test.get("comment"), str):
        return "its comment is not a string"
    if not _is_strings(test.get("flags")):
        return "its flags are not an array of strings"
    if test.get("result") not in _RESULTS:
        return f"result {_short(test.get('result'))} is not one of {', '.join(_RESULTS)}"
    if "error" in test and not isinstance(test["error"], str):
        return "its error is not a string"
    if test["result"] == "invalid" and "error" not in test:
        return "an invalid case names no error category"
    return result_problem(group, test)


def _label(test: Test) -> str:
    tc_id, comment = test.get("tcId"), test.get("comment")
    return (
        f"tcId {tc_id if type(tc_id) is int else _short(tc_id)}"
        f" ({comment[:72] if isinstance(comment, str) else ''})"
    )


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def verify_file(path: Path, expected_sha256: str | None) -> FileResult:
    result = FileResult(path.name)
    try:
        raw = read_file(path.parent, path.name)
    except VectorFileError as exc:
        result.fail(f"not read: {exc}")
        return result
    if expected_sha256 is None:
        result.fail("not listed in the manifest")
    elif hashlib.sha256(raw).hexdigest() != expected_sha256:
        result.fail("sha256 differs from the manifest")
    try:
        data = parse_json(raw)
    except ValueError as exc:
        result.fail(f"not JSON: {exc}")
        return result
    cases = _check_envelope(data, result)
    if cases is None:
        return result
    if data["schema"] == SCENARIO_SCHEMA:
        needed = sum(
            operations([*_listed(group.get("setup")), *_listed(test.get("steps"))])
            for group, test in cases
        )
        if needed > MAX_OPERATIONS:
            result.fail(f"its tests replay {needed} operations, more than {MAX_OPERATIONS}")
            return result
    checks = CHECKS[data["schema"]]
    for group, test in cases:
        label = _label(test)
        check = checks.get(group["type"])
        problem = _case_problem(group, test)
        if check is None:
            result.fail(f"{label}: group type {_short(group['type'])} unknown for this schema")
            continue
        if problem is not None:
            result.fail(f"{label}: {problem}")
            continue
        try:
            check(group, test)
        except Exception as exc:  # every failure is reported, none aborts the run
            result.fail(f"{label}: {type(exc).__name__}: {exc}")
        else:
            result.passed += 1
    return result


def _one_line(text: str) -> str:
    """``text`` as one line of printable ASCII of at most :data:`MAX_LINE` characters. Names,
    comments and values come from the files, which may hold newlines or terminal escapes. A
    backslash is escaped too (``\\\\``), so no text shows as another's escape."""
    clean = "".join(
        c
        if c.isascii() and c.isprintable() and c != "\\"
        else c.encode("unicode_escape").decode("ascii")
        for c in text[:MAX_LINE]
    )
    return (
        clean if len(clean) <= MAX_LINE and len(text) <= MAX_LINE else clean[: MAX_LINE - 3] + "..."
    )


def _report(result: FileResult, counts: str, out: Callable[[str], None]) -> None:
    out(_one_line(f"{result.name}: {counts}"))
    for message in result.messages[:MAX_REPORTED]:
        out(_one_line(f"  FAIL {message}"))
    if len(result.messages) > MAX_REPORTED:
        out(f"  ... and {len(result.messages) - MAX_REPORTED} more")


def verify_dir(directory: Path | None = None, out: Callable[[str], None] = print) -> Report:
    """Verify a vector directory, printing per-file results and the summary line last."""
    directory = default_dir() if directory is None else directory
    report = Report()
    manifest_result = FileResult(MANIFEST_NAME)
    manifest = _load_manifest(directory, manifest_result)
    for name in sorted(n for n in manifest if not is_file_name(n)):
        manifest_result.fail(f"{name!r} is not NAME.json or schemas/NAME.json: not read")
    vector_names = {name for name in manifest if is_file_name(name) and "/" not in name}
    present = {p.name for p in directory.glob("*.json") if p.name != MANIFEST_NAME}
    for name in sorted(vector_names - present):
        manifest_result.fail(f"{name} is listed but missing")
    for name in sorted(n for n in manifest if is_file_name(n) and "/" in n):
        try:
            raw = read_file(directory, name)
        except VectorFileError as exc:
            manifest_result.fail(f"{name}: {exc}")
            continue
        if hashlib.sha256(raw).hexdigest() != manifest[name]:
            manifest_result.fail(f"{name}: sha256 differs from the manifest")
    if not present:
        manifest_result.fail(f"no vector files in {directory}")
    for name in sorted(present):
        result = verify_file(directory / name, manifest.get(name))
        report.files.append(result)
        _report(result, f"{result.passed} passed, {result.failed} failed", out)
    if manifest_result.failed:
        report.files.append(manifest_result)
        _report(manifest_result, f"{manifest_result.failed} problems", out)
    out(report.summary)
    return report
