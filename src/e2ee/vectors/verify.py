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
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from e2ee.vectors.checks import CHECKS
from e2ee.vectors.common import MANIFEST_NAME, SCHEMA_VERSION, SPEC_VERSION, default_dir
from e2ee.vectors.files import VectorFileError, is_file_name, read_file
from e2ee.vectors.scenario_play import MAX_OPERATIONS, operations
from e2ee.wire.codec import is_int

MAX_REPORTED = 10
"""Failures listed per file (all are counted)."""
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


def _load_manifest(directory: Path, result: FileResult) -> dict[str, str]:
    try:
        manifest = json.loads(read_file(directory, MANIFEST_NAME))
        files = manifest["files"]
        if not is_int(manifest.get("specVersion"), SPEC_VERSION):
            result.fail(f"manifest specVersion {manifest.get('specVersion')} != {SPEC_VERSION}")
        return {str(name): str(entry["sha256"]) for name, entry in files.items()}
    except VectorFileError as exc:
        result.fail(f"{MANIFEST_NAME} in {directory}: {exc}")
        return {}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        result.fail(f"unreadable manifest: {exc}")
        return {}


def _check_envelope(data: Any, result: FileResult) -> bool:
    try:
        if data["schema"] not in CHECKS:
            result.fail(f"unknown schema {data['schema']!r}")
            return False
        # JSON integers only: json.loads gives True for `true` and 1.0 for `1.0`, and both are
        # == 1 in Python, though the file's JSON schema does not admit them.
        if not is_int(data["schemaVersion"], SCHEMA_VERSION):
            result.fail(f"schemaVersion {data['schemaVersion']} is not {SCHEMA_VERSION}")
        if not is_int(data["specVersion"], SPEC_VERSION):
            result.fail(f"specVersion {data['specVersion']} is not {SPEC_VERSION}")
        tests = [t for g in data["testGroups"] for t in g["tests"]]
        if not is_int(data["numberOfTests"], len(tests)):
            result.fail(f"numberOfTests {data['numberOfTests']} but {len(tests)} tests")
        ids = [t["tcId"] for t in tests]
        if ids != list(range(1, len(ids) + 1)):
            result.fail("tcIds are not 1..N in order")
        unexplained = {flag for t in tests for flag in t["flags"]} - set(data["notes"])
        if unexplained:
            result.fail(f"flags without notes: {sorted(unexplained)}")
    except (KeyError, TypeError) as exc:
        result.fail(f"malformed envelope: missing {exc}")
        return False
    return True


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
        data = json.loads(raw)
    except ValueError as exc:
        result.fail(f"not JSON: {exc}")
        return result
    if not _check_envelope(data, result):
        return result
    if data["schema"] == SCENARIO_SCHEMA:
        needed = sum(
            operations([*_listed(group.get("setup")), *_listed(test.get("steps"))])
            for group in data["testGroups"]
            for test in group["tests"]
        )
        if needed > MAX_OPERATIONS:
            result.fail(f"its tests replay {needed} operations, more than {MAX_OPERATIONS}")
            return result
    checks = CHECKS[data["schema"]]
    for group in data["testGroups"]:
        check = checks.get(group.get("type"))
        for test in group["tests"]:
            label = f"tcId {test.get('tcId')} ({test.get('comment', '')})"
            if check is None:
                result.fail(f"{label}: group type {group.get('type')!r} unknown for this schema")
                continue
            try:
                check(group, test)
            except Exception as exc:  # every failure is reported, none aborts the run
                result.fail(f"{label}: {type(exc).__name__}: {exc}")
            else:
                result.passed += 1
    return result


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
        out(f"{name}: {result.passed} passed, {result.failed} failed")
        for message in result.messages[:MAX_REPORTED]:
            out(f"  FAIL {message}")
        if len(result.messages) > MAX_REPORTED:
            out(f"  ... and {len(result.messages) - MAX_REPORTED} more")
    if manifest_result.failed:
        report.files.append(manifest_result)
        out(f"{MANIFEST_NAME}: {manifest_result.failed} problems")
        for message in manifest_result.messages[:MAX_REPORTED]:
            out(f"  FAIL {message}")
    out(report.summary)
    return report
