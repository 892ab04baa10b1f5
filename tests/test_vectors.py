"""The language-neutral test vectors (test_vectors/): they verify, they regenerate byte for
byte, their manifest and schemas hold, and a corrupted vector is caught."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from e2ee.cli.main import main
from e2ee.vectors import reference, verify
from e2ee.vectors.common import ENV_DIR, default_dir
from e2ee.vectors.generate import FILES
from e2ee.vectors.outcomes import result_problem
from e2ee.vectors.verify import FileResult, verify_file
from e2ee.wire.messages import PreKeyBundle
from tests.conftest import PROJECT_ROOT, WYCHEPROOF_DIR

VECTORS = PROJECT_ROOT / "test_vectors"
SUMMARY = re.compile(r"^(\d+) passed, (\d+) failed$")
MAX_FILE_SIZE = 4 * 1024 * 1024
"""The largest file verify reads, as test_vectors/README.md states."""


def _load(name: str) -> Any:
    return json.loads((VECTORS / name).read_text(encoding="utf-8"))


def _run_verify(directory: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    status = main(["vectors", "verify", str(directory)])
    lines = capsys.readouterr().out.strip().splitlines()
    return status, lines


# --- (a) verify ----------------------------------------------------------------------------


def test_verify_passes_on_the_committed_vectors(capsys: pytest.CaptureFixture[str]) -> None:
    status, lines = _run_verify(VECTORS, capsys)
    match = SUMMARY.match(lines[-1])
    assert match, lines[-1]
    passed, failed = int(match[1]), int(match[2])
    assert failed == 0, "\n".join(line for line in lines if "FAIL" in line)
    assert passed >= 300
    assert status == 0
    assert len(lines) == len(FILES) + 1  # one line per file, then the summary


def test_verify_defaults_to_the_bundled_vectors(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With no DIR, verify reads the bundled vectors: the committed files, which the test
    above verifies in full. Here each file is only checked against the manifest's sha256, so
    that the whole directory is recomputed once per run, not twice."""
    monkeypatch.delenv(ENV_DIR, raising=False)
    read: list[Path] = []

    def sha256_only(path: Path, expected_sha256: str | None) -> FileResult:
        read.append(path)
        result = FileResult(path.name)
        if hashlib.sha256(path.read_bytes()).hexdigest() == expected_sha256:
            result.passed = 1
        else:
            result.fail("sha256 differs from the manifest")
        return result

    monkeypatch.setattr(verify, "verify_file", sha256_only)
    assert main(["vectors", "verify"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == f"{len(FILES)} passed, 0 failed"
    bundled = default_dir()
    assert sorted(read) == [bundled / name for name in sorted(FILES)]
    for name in [*FILES, "MANIFEST.json"]:  # the manifest pins the schemas too
        assert (bundled / name).read_bytes() == (VECTORS / name).read_bytes(), name


def test_coverage_requirements() -> None:
    total = invalid = 0
    for name in FILES:
        data = _load(name)
        results = [t["result"] for g in data["testGroups"] for t in g["tests"]]
        assert len(results) == data["numberOfTests"]
        total += len(results)
        invalid += results.count("invalid")
    assert len(FILES) >= 15
    assert total >= 300
    assert invalid * 3 >= total


# --- (b) regeneration ------------------------------------------------------------------------


def test_generate_reproduces_the_committed_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["vectors", "generate", "--out", str(tmp_path)]) == 0
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    committed = sorted(
        str(p.relative_to(VECTORS))
        for p in VECTORS.rglob("*")
        if p.is_file() and p.name != "README.md"
    )
    assert written == committed
    for name in written:
        assert (tmp_path / name).read_bytes() == (VECTORS / name).read_bytes(), name


# --- (c) manifest ------------------------------------------------------------------------------


def test_manifest_lists_every_file_with_its_sha256() -> None:
    manifest = _load("MANIFEST.json")
    on_disk = {
        str(p.relative_to(VECTORS))
        for p in VECTORS.rglob("*")
        if p.is_file() and p.name not in ("README.md", "MANIFEST.json")
    }
    assert set(manifest["files"]) == on_disk
    for name, entry in manifest["files"].items():
        assert hashlib.sha256((VECTORS / name).read_bytes()).hexdigest() == entry["sha256"], name
    assert manifest["numberOfTests"] == sum(
        entry.get("numberOfTests", 0) for entry in manifest["files"].values()
    )


README_ROW = re.compile(r"^\| `(\w+\.json)` \| (\w+) \| (\d+) \| (\d+) \| (\d+) \|$")
README_TOTAL = re.compile(
    r"^\| \*\*total: (\d+)\*\* \| \| \*\*(\d+)\*\* \| \*\*(\d+)\*\* \| \*\*(\d+)\*\* \|$"
)


def test_readme_table_matches_the_files() -> None:
    """The file table of test_vectors/README.md gives every file's schema and its valid,
    invalid and acceptable counts, and their totals, as the files have them."""
    lines = (VECTORS / "README.md").read_text(encoding="utf-8").splitlines()
    rows = {m[1]: m.groups()[1:] for m in map(README_ROW.match, lines) if m}
    totals = [m.groups() for m in map(README_TOTAL.match, lines) if m]
    manifest = _load("MANIFEST.json")
    files = sorted(name for name in manifest["files"] if "/" not in name)
    assert sorted(rows) == files
    sums = [0, 0, 0]
    for name in files:
        data = _load(name)
        results = [t["result"] for g in data["testGroups"] for t in g["tests"]]
        counts = [results.count(r) for r in ("valid", "invalid", "acceptable")]
        schema = data["schema"].removesuffix("_schema_v1.json")
        assert rows[name] == (schema, *map(str, counts)), name
        assert sum(counts) == data["numberOfTests"], name
        sums = [a + b for a, b in zip(sums, counts, strict=True)]
    assert totals == [tuple(map(str, [manifest["numberOfTests"], *sums]))]


# --- (d) JSON Schemas --------------------------------------------------------------------------


def test_every_file_validates_against_its_json_schema() -> None:
    jsonschema = pytest.importorskip(
        "jsonschema", reason="jsonschema is not installed (it belongs to the dev extra)"
    )
    validator_class = jsonschema.Draft202012Validator
    schemas = {p.name: json.loads(p.read_text()) for p in (VECTORS / "schemas").glob("*.json")}
    for schema in schemas.values():
        validator_class.check_schema(schema)
    files = [*FILES, "MANIFEST.json"]
    for name in files:
        data = _load(name)
        validator = validator_class(schemas[data["schema"]])
        errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
        assert not errors, f"{name}: {errors[0].message} at {list(errors[0].absolute_path)}"


# --- (e) a corrupted vector is reported ------------------------------------------------------


def _copy(tmp_path: Path, name: str = "x25519.json") -> Path:
    """A copy of test_vectors/ that keeps, of the vector files, only ``name`` (with the schemas
    and the README), and the committed manifest reduced to the files the copy holds. A tamper
    test needs no more: verifying every file (about 1.5 s, most of it
    handshake_replay_memory.json) is test_verify_passes_on_the_committed_vectors's work."""
    target = tmp_path / "vectors"
    shutil.copytree(VECTORS, target)
    manifest = json.loads((target / "MANIFEST.json").read_text())
    assert name in manifest["files"]
    for other in FILES:
        if other != name:
            (target / other).unlink()
            del manifest["files"][other]
    manifest["numberOfTests"] = manifest["files"][name]["numberOfTests"]
    (target / "MANIFEST.json").write_bytes(_raw(manifest))
    return target


def _flip_hex(text: str, index: int = 0) -> str:
    value = bytearray(bytes.fromhex(text))
    value[index] ^= 0x01
    return value.hex()


def _rewrite(directory: Path, name: str, data: Any, *, fix_manifest: bool) -> None:
    raw = (json.dumps(data, indent=1, sort_keys=True) + "\n").encode()
    (directory / name).write_bytes(raw)
    if fix_manifest:
        manifest = json.loads((directory / "MANIFEST.json").read_text())
        manifest["files"][name]["sha256"] = hashlib.sha256(raw).hexdigest()
        (directory / "MANIFEST.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))


@pytest.mark.parametrize("fix_manifest", [True, False])
def test_a_flipped_expected_byte_fails_verification(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fix_manifest: bool
) -> None:
    directory = _copy(tmp_path)
    data = json.loads((directory / "x25519.json").read_text())
    test = data["testGroups"][0]["tests"][0]
    test["shared"] = _flip_hex(test["shared"])
    _rewrite(directory, "x25519.json", data, fix_manifest=fix_manifest)
    status, lines = _run_verify(directory, capsys)
    assert status != 0
    match = SUMMARY.match(lines[-1])
    assert match
    assert int(match[2]) >= 1
    if fix_manifest:  # only the case itself can have caught it
        assert int(match[2]) == 1
        assert any(f"tcId {test['tcId']} " in line for line in lines)


@pytest.mark.parametrize(
    ("field", "spelling"),
    [
        ("schemaVersion", True),
        ("schemaVersion", 1.0),
        ("specVersion", True),
        ("specVersion", 1.0),
        ("numberOfTests", "float"),
    ],
)
def test_a_count_or_version_that_is_not_a_json_integer_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], field: str, spelling: object
) -> None:
    """`true` and `1.0` equal 1 in Python but are not the JSON integer the schema requires."""
    directory = _copy(tmp_path)
    data = json.loads((directory / "x25519.json").read_text())
    assert type(data[field]) is int
    data[field] = float(data[field]) if spelling == "float" else spelling
    assert data[field] == json.loads((directory / "x25519.json").read_text())[field]
    _rewrite(directory, "x25519.json", data, fix_manifest=True)
    status, lines = _run_verify(directory, capsys)
    assert status != 0
    assert any(field in line for line in lines), lines


def test_a_manifest_whose_spec_version_is_true_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = _copy(tmp_path)
    manifest = json.loads((directory / "MANIFEST.json").read_text())
    assert manifest["specVersion"] == 1
    manifest["specVersion"] = True
    (directory / "MANIFEST.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
    status, lines = _run_verify(directory, capsys)
    assert status != 0
    assert any("manifest specVersion" in line for line in lines), lines


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("conversation_basic.json", ("steps", 0, "expect", "message")),
        ("handshake_pqxdh.json", ("steps", 0, "expect", "handshake", "rootKey")),
        ("conversation_tamper.json", ("steps", 2, "expect", "plaintext")),
        ("wire_bundle.json", ("fields", "identityKey")),
        ("mlkem1024.json", ("sharedSecret",)),
        ("relay_signatures.json", ("fields", "userKey")),
        ("relay_signatures.json", ("payload",)),
    ],
)
def test_flipped_outputs_of_each_kind_are_caught(
    tmp_path: Path, name: str, path: tuple[Any, ...]
) -> None:
    data = _load(name)
    test = next(t for g in data["testGroups"] for t in g["tests"] if _has(t, path))
    holder = test
    for key in path[:-1]:
        holder = holder[key]
    holder[path[-1]] = _flip_hex(holder[path[-1]])
    raw = (json.dumps(data, indent=1, sort_keys=True) + "\n").encode()
    (tmp_path / name).write_bytes(raw)
    result = verify_file(tmp_path / name, hashlib.sha256(raw).hexdigest())
    assert result.failed == 1
    assert f"tcId {test['tcId']} " in result.messages[0]
    assert result.passed == data["numberOfTests"] - 1


def _has(value: Any, path: tuple[Any, ...]) -> bool:
    for key in path:
        try:
            value = value[key]
        except (KeyError, IndexError, TypeError):
            return False
    return isinstance(value, str) and len(value) > 0


def test_a_missing_directory_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, lines = _run_verify(tmp_path / "nothing-here", capsys)
    assert status == 1
    assert SUMMARY.match(lines[-1])


# --- (f) a vector directory is untrusted input --------------------------------------------------


def _small_dir(
    directory: Path, files: dict[str, bytes], listed: dict[str, str] | None = None
) -> Path:
    """A vector directory holding ``files`` (name -> bytes) and a manifest listing each with its
    sha256, plus ``listed`` (name -> sha256) for files it names but does not hold."""
    directory.mkdir(parents=True, exist_ok=True)
    entries = {name: {"sha256": hashlib.sha256(raw).hexdigest()} for name, raw in files.items()}
    entries.update({name: {"sha256": sha} for name, sha in (listed or {}).items()})
    for name, raw in files.items():
        (directory / name).write_bytes(raw)
    manifest = {
        "files": entries,
        "numberOfTests": 0,
        "schema": "e2ee_manifest_schema_v1.json",
        "schemaVersion": 1,
        "specVersion": 1,
    }
    (directory / "MANIFEST.json").write_text(json.dumps(manifest))
    return directory


def _summary(lines: list[str]) -> tuple[int, int]:
    match = SUMMARY.match(lines[-1])
    assert match, lines
    return int(match[1]), int(match[2])


@pytest.mark.parametrize(
    "name", ["../outside.json", "ABSOLUTE", "schemas/../../outside.json", "schemas/a/b.json"]
)
def test_a_manifest_name_outside_the_directory_is_not_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    """A listed name that leaves the directory is refused, even when the file it names exists
    and has the listed sha256 (before, it was read: /dev/zero exhausted memory)."""
    outside = tmp_path / "outside.json"
    outside.write_bytes(b"{}")
    name = str(outside) if name == "ABSOLUTE" else name
    kdf = (VECTORS / "kdf_ck.json").read_bytes()
    sha = hashlib.sha256(b"{}").hexdigest()
    directory = _small_dir(tmp_path / "v", {"kdf_ck.json": kdf}, {name: sha})
    (directory / "schemas" / "a").mkdir(parents=True)  # so that each name leads to a file
    (directory / "schemas" / "a" / "b.json").write_bytes(b"{}")
    status, lines = _run_verify(directory, capsys)
    assert status == 1
    assert _summary(lines) == (11, 1)
    assert any(line.startswith("  FAIL ") and name in line for line in lines), lines


def _make_special(directory: Path, kind: str) -> None:
    target = directory / "x25519.json"
    if kind == "directory":
        target.mkdir()
    elif kind == "link out of the directory":
        outside = directory.parent / "x25519.json"
        outside.write_bytes((VECTORS / "x25519.json").read_bytes())
        target.symlink_to(outside)
    elif kind == "link to a directory out of it":
        (directory.parent / "elsewhere").mkdir()
        (directory.parent / "elsewhere" / "s.json").write_bytes(b"{}")
        (directory / "schemas").symlink_to(directory.parent / "elsewhere")
    else:
        os.mkfifo(target)


@pytest.mark.parametrize(
    "kind", ["FIFO", "directory", "link out of the directory", "link to a directory out of it"]
)
def test_only_regular_files_inside_the_directory_are_read(tmp_path: Path, kind: str) -> None:
    """A FIFO named x25519.json blocked verify forever, a directory so named ended in a
    traceback, and symbolic links were followed out of the directory. Each is one failure
    line now. Run as a process with a timeout, so that a hang fails instead of hanging."""
    if kind == "FIFO" and not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this system")
    x25519 = (VECTORS / "x25519.json").read_bytes()
    listed = {"x25519.json": hashlib.sha256(x25519).hexdigest()}
    if kind == "link to a directory out of it":
        listed = {"schemas/s.json": hashlib.sha256(b"{}").hexdigest()}
    kdf = (VECTORS / "kdf_ck.json").read_bytes()
    directory = _small_dir(tmp_path / "v", {"kdf_ck.json": kdf}, listed)
    _make_special(directory, kind)
    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT / "src"))
    try:
        done = subprocess.run(
            [sys.executable, "-m", "e2ee.cli", "vectors", "verify", str(directory)],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("vectors verify did not finish within 60 s")
    lines = done.stdout.splitlines()
    assert done.returncode == 1, done.stderr
    assert done.stderr == ""
    assert _summary(lines) == (11, 1)


def test_a_file_larger_than_the_cap_is_not_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    x25519 = (VECTORS / "x25519.json").read_bytes()
    at_cap = x25519 + b" " * (MAX_FILE_SIZE - len(x25519))  # still the same JSON
    directory = _small_dir(tmp_path / "at", {"x25519.json": at_cap})
    assert _run_verify(directory, capsys)[0] == 0
    directory = _small_dir(tmp_path / "over", {"x25519.json": at_cap + b" "})
    status, lines = _run_verify(directory, capsys)
    assert status == 1
    assert _summary(lines) == (0, 1)
    assert any("larger than" in line for line in lines), lines


def _deeply_nested(value: Any) -> bytes:
    """``value`` as JSON with a member nested 100,000 arrays deep (json.loads: RecursionError)."""
    text = json.dumps(value)
    return (text[:-1] + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}").encode()


def _malformed_dir(directory: Path, kind: str) -> Path:
    kdf = _load("kdf_ck.json")
    if kind == "manifest nested deeply":
        directory = _small_dir(directory, {"kdf_ck.json": _raw(kdf)})
        manifest = json.loads((directory / "MANIFEST.json").read_text())
        (directory / "MANIFEST.json").write_bytes(_deeply_nested(manifest))
        return directory
    if kind == "file nested deeply":
        return _small_dir(directory, {"kdf_ck.json": _deeply_nested(kdf)})
    kdf["testGroups"][0]["type"] = ["KdfCk"] if kind == "group type an array" else {"KdfCk": 1}
    return _small_dir(directory, {"kdf_ck.json": _raw(kdf)})


def _raw(data: Any) -> bytes:
    return (json.dumps(data, indent=1, sort_keys=True) + "\n").encode()


@pytest.mark.parametrize(
    "kind",
    ["file nested deeply", "manifest nested deeply", "group type an array", "group type an object"],
)
def test_a_malformed_file_is_a_failure_line_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    """Each of these ended verify in a traceback (RecursionError, TypeError)."""
    directory = _malformed_dir(tmp_path / "v", kind)
    status, lines = _run_verify(directory, capsys)
    assert status == 1
    assert _summary(lines)[1] >= 1
    assert any(line.startswith("  FAIL ") for line in lines), lines


def test_text_from_a_file_is_printed_as_one_short_printable_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A comment, a file name or a value from the files can hold newlines, terminal escapes
    or megabytes; verify prints each file and each failure on one line of printable ASCII of
    at most 200 characters."""
    data = _load("x25519.json")
    test = data["testGroups"][0]["tests"][0]
    test["comment"] = "line one\nfake: 46 passed, 0 failed\x1b[2J" + "é" * 10_000
    test["shared"] = _flip_hex(test["shared"])
    listed = {"line\nbreak\x1b[31m.json": "0" * 64, "x" * 10_000 + ".json": "0" * 64}
    directory = _small_dir(tmp_path / "v", {"x25519.json": _raw(data)}, listed)
    status, lines = _run_verify(directory, capsys)
    assert status == 1
    assert _summary(lines) == (data["numberOfTests"] - 1, 3)
    assert len(lines) == 6  # x25519.json and its failure, MANIFEST.json and its 2, summary
    for line in lines:
        assert len(line) <= 200, line
        assert line.isascii(), line
        assert line.isprintable(), line


def _ambiguous_x25519(kind: str) -> bytes:
    """x25519.json, verifying as it stands, with one ambiguity that a JSON parser may read
    otherwise than Python's json module does by default."""
    data = _load("x25519.json")
    test = data["testGroups"][0]["tests"][0]
    assert test["result"] == "valid"
    text = json.dumps(data, indent=1, sort_keys=True)
    member = f'"shared": "{test["shared"]}"'
    assert text.count(member) == 1
    if kind == "UTF-16":
        return text.encode("utf-16")  # json.loads(bytes) guesses the encoding
    extra = {
        "duplicate member name": f'"shared": "{"00" * 32}", ',  # the last one wins in Python
        "NaN": '"x": NaN, ',
        "-Infinity": '"x": -Infinity, ',
        "a number beyond a double": '"x": 1e999, ',
    }[kind]
    return text.replace(member, extra + member).encode()


@pytest.mark.parametrize(
    "kind", ["duplicate member name", "NaN", "-Infinity", "a number beyond a double", "UTF-16"]
)
def test_json_that_parsers_may_read_differently_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    """A file verified as 46 passed although other implementers' parsers read a different
    expected value (the first of two "shared" members) or refuse it (NaN is not JSON)."""
    directory = _small_dir(tmp_path / "v", {"x25519.json": _ambiguous_x25519(kind)})
    status, lines = _run_verify(directory, capsys)
    assert status == 1
    assert _summary(lines) == (0, 1)
    assert lines[1].startswith("  FAIL not JSON: "), lines


def test_a_manifest_with_a_duplicate_member_name_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = (VECTORS / "x25519.json").read_bytes()
    directory = _small_dir(tmp_path / "v", {"x25519.json": raw})
    manifest = (directory / "MANIFEST.json").read_text()
    listed = '"x25519.json": {"sha256": '
    assert manifest.count(listed) == 1
    wrong = '"x25519.json": {"sha256": "' + "0" * 64 + '"}, '
    (directory / "MANIFEST.json").write_text(manifest.replace(listed, wrong + listed))
    status, lines = _run_verify(directory, capsys)
    assert status == 1
    assert any("unreadable manifest" in line for line in lines), lines


@pytest.mark.parametrize("name", ["x25519.json", "wire_bundle.json", "hkdf_sha256.json"])
def test_an_invalid_case_without_an_error_category_fails(tmp_path: Path, name: str) -> None:
    """The generator refuses to write an invalid case without `error`, and the schema requires
    it; verify accepted one, as long as the operation failed in any way (or, for a check with
    no failure mode, did nothing at all with `result`)."""
    data = _load(name)
    test = next(
        (t for g in data["testGroups"] for t in g["tests"] if t["result"] == "invalid"),
        data["testGroups"][0]["tests"][0],
    )
    test["result"] = "invalid"
    test.pop("error", None)
    passed, messages = _verify_data(tmp_path, name, data)
    assert passed == data["numberOfTests"] - 1
    assert len(messages) == 1, messages
    assert messages[0].startswith(f"tcId {test['tcId']} ")
    assert "names no error" in messages[0]


def _first(data: Any, result: str) -> Any:
    return next(t for g in data["testGroups"] for t in g["tests"] if t["result"] == result)


def _computation_marked_invalid(data: Any) -> None:
    test = data["testGroups"][0]["tests"][0]
    test["result"], test["error"] = "invalid", "auth_failed"


def _failing_scenario_marked_valid(data: Any) -> None:
    _first(data, "invalid")["result"] = "valid"


def _scenario_with_another_error(data: Any) -> None:
    test = _first(data, "invalid")
    test["error"] = "decode_error" if test["error"] != "decode_error" else "auth_failed"


def _passing_scenario_marked_invalid(data: Any) -> None:
    test = _first(data, "valid")
    test["result"], test["error"] = "invalid", "auth_failed"


@pytest.mark.parametrize(
    ("name", "edit", "message"),
    [
        ("kdf_ck.json", _computation_marked_invalid, "only computes values"),
        ("hkdf_sha256.json", _computation_marked_invalid, "only computes values"),
        ("conversation_tamper.json", _failing_scenario_marked_valid, "expects an error"),
        ("conversation_tamper.json", _scenario_with_another_error, "another error category"),
        ("conversation_basic.json", _passing_scenario_marked_invalid, "no step that expects"),
    ],
)
def test_a_result_the_case_cannot_check_fails(
    tmp_path: Path, name: str, edit: Callable[[Any], None], message: str
) -> None:
    """A case's result must be one its group type checks (e2ee.vectors.outcomes): a KdfCk or
    HkdfTest case only computes values, so `invalid` there was ignored and the case passed;
    a scenario's result and error must agree with what its own steps expect."""
    data = _load(name)
    edit(data)
    passed, messages = _verify_data(tmp_path, name, data)
    assert passed == data["numberOfTests"] - 1
    assert len(messages) == 1, messages
    assert message in messages[0]


@contextmanager
def _deadline(seconds: int) -> Iterator[None]:
    """Fail (instead of hanging) when the block runs longer than ``seconds``."""
    if not hasattr(signal, "setitimer"):
        pytest.skip("no interval timer on this system")

    def expire(signum: int, frame: object) -> None:
        pytest.fail(f"did not finish within {seconds} s")  # a BaseException: nothing catches it

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _verify_data(directory: Path, name: str, data: Any) -> tuple[int, list[str]]:
    """verify_file on ``data`` written as ``name`` (with its true sha256): passed, messages."""
    raw = (json.dumps(data, indent=1, sort_keys=True) + "\n").encode()
    (directory / name).write_bytes(raw)
    with _deadline(60):
        result = verify_file(directory / name, hashlib.sha256(raw).hexdigest())
    return result.passed, result.messages


def _kdf_ck_chain(chain_key: bytes, steps: int) -> tuple[list[str], list[str]]:
    """spec/ratchet.md: KDF_CK(ck) = (HMAC(ck, 0x02) the next chain key, HMAC(ck, 0x01))."""
    message_keys, chain_keys = [], []
    for _ in range(steps):
        message_keys.append(hmac.new(chain_key, b"\x01", "sha256").hexdigest())
        chain_key = hmac.new(chain_key, b"\x02", "sha256").digest()
        chain_keys.append(chain_key.hex())
    return message_keys, chain_keys


def test_a_kdf_chain_of_more_than_max_skip_steps_is_refused(tmp_path: Path) -> None:
    """KdfCkChain's `steps` was run as given: 10**15 steps ran until memory ran out. Now a
    chain is at most MAX_SKIP = 1000 steps (spec/limits.md) and lists one key per step."""
    data = _load("kdf_ck.json")
    test = next(t for g in data["testGroups"] if g["type"] == "KdfCkChain" for t in g["tests"])
    chain_key = bytes.fromhex(test["chainKey"])
    assert _kdf_ck_chain(chain_key, test["steps"]) == (test["messageKeys"], test["chainKeys"])
    total = data["numberOfTests"]
    for steps, failures in ((1000, 0), (1001, 1)):
        test["steps"] = steps
        test["messageKeys"], test["chainKeys"] = _kdf_ck_chain(chain_key, steps)
        passed, messages = _verify_data(tmp_path, "kdf_ck.json", data)
        assert (passed, len(messages)) == (total - failures, failures), messages
    test["messageKeys"], test["chainKeys"] = _kdf_ck_chain(chain_key, 3)
    test["steps"] = 10**15
    passed, messages = _verify_data(tmp_path, "kdf_ck.json", data)
    assert (passed, len(messages)) == (total - 1, 1), messages
    assert "steps" in messages[0]


def test_an_encrypt_step_repeated_more_than_max_skip_plus_one_times_is_refused(
    tmp_path: Path,
) -> None:
    """An encrypt step's `repeat` was run as given (10**12: a hang). Now it is at most
    MAX_SKIP + 1 = 1001, one more message than a receiver skips."""
    data = _load("conversation_basic.json")
    plain = {"allowX3dh": False, "headerEncryption": False}
    group = next(g for g in data["testGroups"] if any(s.get("config") == plain for s in g["setup"]))
    test = next(t for t in group["tests"] if t["comment"].startswith("bursts"))
    last = test["steps"][-1]
    assert (last["op"], last["party"]) == ("decrypt", "alice")  # bob has a sending chain
    # With header encryption off, bob's next messages on that chain draw no random values.
    test["steps"].append(
        {"op": "encrypt", "party": "bob", "plaintext": "", "random": [], "expect": {}}
    )
    total = data["numberOfTests"]
    for repeat, failures in ((1001, 0), (1002, 1), (10**12, 1)):
        test["steps"][-1]["repeat"] = repeat
        passed, messages = _verify_data(tmp_path, "conversation_basic.json", data)
        assert (passed, len(messages)) == (total - failures, failures), messages
        assert all("repeat" in message for message in messages), messages


def test_a_scenario_file_that_replays_too_many_operations_is_refused(tmp_path: Path) -> None:
    """Every test replays its group's setup, so a file with a long setup and many tests asked
    for work that grows as their product. A file replays at most 20,000 operations
    (test_vectors/README.md); conversation_limits.json, the largest, replays 8,156."""
    data = _load("conversation_limits.json")
    for copies, failures in ((2, 0), (3, 1)):
        tests = data["numberOfTests"] * copies
        grown = json.loads(json.dumps(data))
        for group in grown["testGroups"]:
            group["tests"] = [json.loads(json.dumps(t)) for t in group["tests"] * copies]
        for tc_id, test in enumerate((t for g in grown["testGroups"] for t in g["tests"]), 1):
            test["tcId"] = tc_id
        grown["numberOfTests"] = tests
        passed, messages = _verify_data(tmp_path, "conversation_limits.json", grown)
        if failures:
            assert passed == 0
            assert len(messages) == 1, messages
            assert "operations" in messages[0]
        else:
            assert (passed, messages) == (tests, [])


# --- the ML-KEM encapsulation randomness in the vectors -----------------------------------------


def _kem_keys_of_bundle(data: bytes) -> dict[str, bytes]:
    bundle = PreKeyBundle.from_bytes(data)
    keys = [k for k in (bundle.kem_prekey, bundle.one_time_kem_prekey) if k is not None]
    return {hashlib.sha256(k).hexdigest(): k for k in keys}


def test_recorded_encapsulations_follow_from_m() -> None:
    """Every (shared secret, ciphertext) is FIPS 203 Encaps_internal(ek, m) of its `m`, so an
    implementation that can encapsulate deterministically may use m instead of replaying."""
    checked = 0
    for name in FILES:
        data = _load(name)
        if data["schema"] != "e2ee_scenario_schema_v1.json":
            continue
        for group in data["testGroups"]:
            for test in group["tests"]:
                for step in [*group["setup"], *test["steps"]]:
                    for record in step.get("kemEncapsulations", []):
                        keys = _kem_keys_of_bundle(bytes.fromhex(step["bundle"]))
                        ek = keys[record["encapsulationKeySha256"]]
                        shared, ct = reference.mlkem1024_encaps(ek, bytes.fromhex(record["m"]))
                        assert shared.hex() == record["sharedSecret"]
                        assert ct.hex() == record["ciphertext"]
                        checked += 1
    for group in _load("mlkem1024.json")["testGroups"]:
        for test in group["tests"]:
            if "m" in test:
                ek = bytes.fromhex(group["encapsulationKey"])
                shared, ct = reference.mlkem1024_encaps(ek, bytes.fromhex(test["m"]))
                assert (shared.hex(), ct.hex()) == (test["sharedSecret"], test["ciphertext"])
                checked += 1
    assert checked >= 20


# --- the generator's reference ML-KEM against published vectors ---------------------------------


def _wycheproof(name: str) -> Any:
    path = WYCHEPROOF_DIR / name
    if not path.exists():
        pytest.skip(f"skipped: {path} is not there (it is in CI, beside the project)")
    return json.loads(path.read_text())


def test_reference_mlkem_encapsulation_matches_wycheproof() -> None:
    data = _wycheproof("mlkem_1024_encaps_test.json")
    count = 0
    for group in data["testGroups"]:
        for test in group["tests"]:
            ek = bytes.fromhex(test["ek"])
            if test["result"] == "valid":
                shared, ct = reference.mlkem1024_encaps(ek, bytes.fromhex(test["m"]))
                assert (shared.hex(), ct.hex()) == (test["K"], test["c"]), test["tcId"]
                count += 1
            else:
                assert not reference.mlkem1024_encaps_key_ok(ek), test["tcId"]
    assert count > 100


def test_reference_mlkem_keygen_and_decapsulation_match_wycheproof() -> None:
    data = _wycheproof("mlkem_1024_test.json")
    count = 0
    for group in data["testGroups"]:
        for test in group["tests"]:
            if test["result"] != "valid" or len(test["seed"]) != 128:
                continue
            ek, dk = reference.mlkem1024_keygen(bytes.fromhex(test["seed"]))
            assert ek.hex() == test["ek"], test["tcId"]
            assert reference.mlkem1024_decaps(dk, bytes.fromhex(test["c"])).hex() == test["K"]
            count += 1
            if count >= 40:  # pure Python: a sample is enough
                return
    assert count > 0


def test_reference_x25519_matches_wycheproof() -> None:
    data = _wycheproof("x25519_test.json")
    count = 0
    for group in data["testGroups"]:
        for test in group["tests"]:
            if test["result"] == "invalid":
                continue
            shared = reference.x25519(bytes.fromhex(test["private"]), bytes.fromhex(test["public"]))
            assert shared.hex() == test["shared"], test["tcId"]
            count += 1
    assert count > 100


@pytest.mark.parametrize(
    ("group", "test", "message"),
    [
        ({"setup": "x"}, {"steps": [], "result": "valid"}, "must be arrays of steps"),
        ({"setup": []}, {"steps": [{"op": "encrypt"}], "result": "valid"}, "must be arrays"),
        ({"setup": []}, {"steps": [7], "result": "valid"}, "must be arrays of steps"),
        (
            {"setup": [{"expect": {"error": "auth_failed"}}]},
            {"steps": [], "result": "valid"},
            "setup steps never fail",
        ),
        (
            {"setup": []},
            {"steps": [{"expect": {"error": "auth_failed"}}], "result": "acceptable"},
            "a scenario marked acceptable has a step that expects an error",
        ),
        (
            {"setup": []},
            {
                "steps": [{"expect": {"error": "auth_failed"}}, {"expect": {"error": "x"}}],
                "result": "invalid",
                "error": "auth_failed",
            },
            "another error category",
        ),
    ],
)
def test_scenario_outcomes_that_cannot_hold_are_named(
    group: dict[str, Any], test: dict[str, Any], message: str
) -> None:
    """A scenario file is untrusted: steps that are not step objects are a problem, not an
    exception, and every step that expects an error must expect the test's error."""
    problem = result_problem({"type": "ScenarioTest", **group}, test)
    assert problem is not None
    assert message in problem


def test_consistent_outcomes_are_no_problem() -> None:
    failing = {"steps": [{"expect": {"error": "auth_failed"}}], "result": "invalid"}
    scenario = {"type": "ScenarioTest", "setup": []}
    assert result_problem(scenario, {**failing, "error": "auth_failed"}) is None
    assert result_problem(scenario, {"steps": [], "result": "valid"}) is None
    assert (
        result_problem({"type": "XdhComp"}, {"result": "invalid", "error": "auth_failed"}) is None
    )
