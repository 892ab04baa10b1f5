"""``e2ee conformance run|serve``: e2ee passes every vector case through the JSON-lines
protocol, and the runner reports a broken, crashing, hanging or mute adapter as failing."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from e2ee.cli.main import main
from e2ee.conformance.cases import uses_state
from e2ee.conformance.protocol import AREA_OPS, PROTOCOL_NAME, PROTOCOL_VERSION, STATE_CAPABILITY
from e2ee.conformance.serve import Server
from tests.conftest import PROJECT_ROOT

VECTORS = PROJECT_ROOT / "test_vectors"
SUMMARY = re.compile(r"^(\d+) passed, (\d+) failed$")
PYTHON = sys.executable
SERVE = [PYTHON, "-m", "e2ee.cli", "conformance", "serve"]
BROKEN = [PYTHON, str(Path(__file__).resolve().parent / "broken_adapter.py")]


def _tests(area: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    data = json.loads((VECTORS / f"{area}.json").read_text(encoding="utf-8"))
    return [(group, test) for group in data["testGroups"] for test in group["tests"]]


def _total_cases() -> int:
    return sum(len(_tests(path.stem)) for path in VECTORS.glob("*.json") if path.stem in AREA_OPS)


def _manifest_total() -> int:
    """The number of cases of the bundled vectors, as MANIFEST.json states it (written by the
    generator, independently of the runner)."""
    manifest = json.loads((VECTORS / "MANIFEST.json").read_text(encoding="utf-8"))
    total: int = manifest["numberOfTests"]
    assert total == sum(entry.get("numberOfTests", 0) for entry in manifest["files"].values())
    return total


def _summary(lines: list[str]) -> tuple[int, int]:
    match = SUMMARY.match(lines[-1])
    assert match, lines[-1]
    return int(match[1]), int(match[2])


def _run(
    capsys: pytest.CaptureFixture[str], adapter: list[str], *options: str
) -> tuple[int, list[str], int, int]:
    """The runner in-process (the adapter is a real subprocess): status, lines, N, M."""
    status = main(["conformance", "run", *options, "--", *adapter])
    lines = capsys.readouterr().out.strip().splitlines()
    passed, failed = _summary(lines)
    return status, lines, passed, failed


def _areas(*names: str) -> list[str]:
    return [option for name in names for option in ("--area", name)]


def _vector_dir(directory: Path, files: dict[str, Any]) -> Path:
    """A vector directory with these files (JSON values, or raw bytes) and a manifest that
    lists each file's true SHA-256, so only the files' content is at fault."""
    directory.mkdir(exist_ok=True)
    manifest: dict[str, Any] = {}
    for name, content in files.items():
        raw = content if isinstance(content, bytes) else json.dumps(content).encode()
        (directory / name).write_bytes(raw)
        manifest[name] = {"sha256": hashlib.sha256(raw).hexdigest()}
    (directory / "MANIFEST.json").write_text(json.dumps({"files": manifest}), encoding="utf-8")
    return directory


def _vector(area: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / f"{area}.json").read_text(encoding="utf-8"))
    return data


def _area_line(lines: list[str], area: str) -> str:
    return next(line for line in lines if line.startswith(f"{area}: "))


# --- e2ee against itself ----------------------------------------------------------------------


def test_serve_passes_every_case_through_the_cli() -> None:
    """What CI runs: ``e2ee conformance run -- e2ee conformance serve``, both as processes."""
    completed = subprocess.run(
        [PYTHON, "-m", "e2ee.cli", "conformance", "run", "--", *SERVE],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=PROJECT_ROOT,
    )
    lines = completed.stdout.strip().splitlines()
    passed, failed = _summary(lines)
    assert failed == 0, "\n".join(line for line in lines if "FAIL" in line)
    assert passed >= 300
    assert passed == _total_cases() == _manifest_total()
    assert completed.returncode == 0
    assert not any("unsupported" in line for line in lines)
    assert f"relay_signatures: {len(_tests('relay_signatures'))} passed, 0 failed" in lines
    assert len([line for line in lines if re.match(r"^\w+: \d+ passed, 0 failed$", line)]) == len(
        AREA_OPS
    )


def test_console_script_serves_the_protocol() -> None:
    script = Path(PYTHON).parent / "e2ee"
    if not script.exists():
        pytest.skip("the e2ee console script is not installed next to the interpreter")
    requests = [
        {"id": 1, "op": "hello", "protocol": PROTOCOL_NAME, "version": PROTOCOL_VERSION},
        {"id": 2, "op": "x25519_public_key", "private": "09" + "00" * 31},
        {"id": 3, "op": "no_such_op"},
        {"id": 4, "op": "shutdown"},
    ]
    completed = subprocess.run(
        [str(script), "conformance", "serve"],
        input="".join(json.dumps(r) + "\n" for r in requests),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    responses = [json.loads(line) for line in completed.stdout.splitlines()]
    assert [r["id"] for r in responses] == [1, 2, 3, 4]
    hello = responses[0]["result"]
    assert hello["protocol"] == PROTOCOL_NAME
    assert hello["version"] == PROTOCOL_VERSION
    assert set(hello["capabilities"]) == {*AREA_OPS, STATE_CAPABILITY}
    assert len(responses[1]["result"]["public"]) == 64
    assert responses[2]["error"]["category"] == "unsupported_operation"
    assert responses[3] == {"id": 4, "result": {}}


def test_an_adapter_with_some_areas_passes_and_the_rest_is_unsupported(
    capsys: pytest.CaptureFixture[str],
) -> None:
    areas = ["x25519", "hkdf_sha256"]
    status, lines, passed, failed = _run(capsys, [*BROKEN, "ok", "--areas", ",".join(areas)])
    assert (passed, failed) == (sum(len(_tests(a)) for a in areas), 0)
    assert status == 0
    unsupported = _total_cases() - passed
    assert any(line.startswith(f"unsupported: {unsupported} cases") for line in lines)
    assert _area_line(lines, "conversation_basic").endswith("unsupported")


def test_save_and_load_steps_need_the_state_capability(
    capsys: pytest.CaptureFixture[str],
) -> None:
    cases = _tests("handshake_pqxdh")
    with_state = sum(1 for group, test in cases if uses_state(group, test))
    assert 0 < with_state < len(cases)
    status, lines, passed, failed = _run(
        capsys, [*BROKEN, "ok", "--areas", "handshake_pqxdh"], *_areas("handshake_pqxdh")
    )
    assert (passed, failed, status) == (len(cases) - with_state, 0, 0)
    assert _area_line(lines, "handshake_pqxdh").endswith(f"{with_state} unsupported")


# --- broken adapters ------------------------------------------------------------------------


def test_flipped_output_bytes_are_reported(capsys: pytest.CaptureFixture[str]) -> None:
    areas = ("x25519", "hkdf_sha256", "conversation_basic", "kdf_ck")
    status, lines, passed, failed = _run(capsys, [*BROKEN, "flip"], *_areas(*areas))
    valid_xdh = sum(
        1 for g, t in _tests("x25519") if g["type"] == "XdhComp" and t["result"] == "valid"
    )
    expected_failures = valid_xdh + len(_tests("hkdf_sha256")) + len(_tests("conversation_basic"))
    assert failed == expected_failures
    assert passed == sum(len(_tests(a)) for a in areas) - expected_failures
    assert status == 1
    assert _area_line(lines, "kdf_ck").endswith(" 0 failed")
    text = "\n".join(lines)
    assert "FAIL tcId 1 (" in text
    assert "shared: expected" in text
    assert "okm: expected" in text
    assert "(encrypt by alice): message: expected" in text


def test_flipped_relay_bytes_are_reported(capsys: pytest.CaptureFixture[str]) -> None:
    """A re-issued ticket or re-signed list one digit off fails its valid case; a login payload
    one digit off fails every login case (it is compared for invalid cases too). A login
    signature one digit off: test_wrongly_decoded_relay_fields_are_reported."""
    cases = _tests("relay_signatures")
    remade = sum(
        1
        for group, test in cases
        if group["type"] in ("RegistrationTicketVerify", "DeviceListVerify")
        and test["result"] == "valid"
    )
    logins = sum(1 for group, _ in cases if group["type"] == "RelayLoginSignature")
    assert remade > 0
    assert logins > 0
    status, lines, passed, failed = _run(capsys, [*BROKEN, "flip"], *_areas("relay_signatures"))
    assert (passed, failed, status) == (len(cases) - remade - logins, remade + logins, 1)
    text = "\n".join(lines)
    assert "issued ticket: expected" in text
    assert "signed list: expected" in text
    assert "payload: expected" in text


def test_wrongly_decoded_relay_fields_are_reported(capsys: pytest.CaptureFixture[str]) -> None:
    """A ticket or device list decoded with another user key, or a login signature one digit
    off, fails every valid case (the invalid ones return no fields and sign nothing)."""
    cases = _tests("relay_signatures")
    decoded = sum(1 for _, test in cases if test["result"] == "valid")
    assert {group["type"] for group, test in cases if test["result"] == "valid"} == {
        "RegistrationTicketVerify",
        "DeviceListVerify",
        "RelayLoginSignature",
    }
    status, lines, passed, failed = _run(
        capsys, [*BROKEN, "relay-fields"], *_areas("relay_signatures")
    )
    assert (passed, failed, status) == (len(cases) - decoded, decoded, 1)
    assert "fields differs in ['userKey']" in "\n".join(lines)
    assert "signature: expected" in "\n".join(lines)


def test_wrong_error_categories_are_reported(capsys: pytest.CaptureFixture[str]) -> None:
    areas = ("message_aead", "wire_bundle", "conversation_replay", "handshake_rejections")
    status, lines, passed, failed = _run(capsys, [*BROKEN, "wrong-error"], *_areas(*areas))
    invalid = sum(1 for a in areas for _, t in _tests(a) if t["result"] == "invalid")
    # An "acceptable" case fails too when e2ee takes the rejecting branch.
    rejected_acceptable = sum(
        1
        for _, t in _tests("wire_bundle")
        if t["result"] == "acceptable"
        and "error" in Server().handle({"id": 1, "op": "decode_bundle", "bundle": t["bundle"]})
    )
    assert invalid > 0
    assert failed == invalid + rejected_acceptable
    assert passed == sum(len(_tests(a)) for a in areas) - failed
    assert status == 1
    assert "error category: expected auth_failed, got decode_error" in "\n".join(lines)


def test_a_ticket_check_that_ignores_the_origin_is_reported(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An adapter whose ticket check forgets the relay's origin accepts a ticket a phishing
    relay obtained: exactly the WrongOrigin ticket cases fail, as accepted invalid cases."""
    cases = _tests("relay_signatures")
    wrong_origin = [
        test
        for group, test in cases
        if group["type"] == "RegistrationTicketVerify" and "WrongOrigin" in test["flags"]
    ]
    assert len(wrong_origin) >= 2
    status, lines, passed, failed = _run(
        capsys, [*BROKEN, "ticket-origin"], "--verbose", *_areas("relay_signatures")
    )
    assert (passed, failed, status) == (len(cases) - len(wrong_origin), len(wrong_origin), 1)
    failures = [line for line in lines if line.startswith("  FAIL ")]
    assert sorted(failures) == sorted(
        f"  FAIL tcId {test['tcId']} ({test['comment']}): registration_ticket_check accepted"
        " an invalid case (expected relay_forbidden)"
        for test in wrong_origin
    )


def test_a_relay_error_without_its_code_is_reported(capsys: pytest.CaptureFixture[str]) -> None:
    """The right category is not enough where a vector names the relay's code: every invalid
    ticket case fails without it; the device list and login cases (no code) still pass."""
    cases = _tests("relay_signatures")
    with_code = sum(1 for _, test in cases if "code" in test)
    assert with_code > 0
    status, lines, passed, failed = _run(capsys, [*BROKEN, "no-code"], *_areas("relay_signatures"))
    assert (passed, failed, status) == (len(cases) - with_code, with_code, 1)
    assert "relay code: expected 'bad_ticket', got none" in "\n".join(lines)


def test_state_unchanged_claims_are_checked(capsys: pytest.CaptureFixture[str]) -> None:
    areas = ("conversation_replay", "conversation_tamper", "handshake_x3dh")
    status, lines, _passed, failed = _run(capsys, [*BROKEN, "fingerprint"], *_areas(*areas))
    claims = sum(
        1
        for a in areas
        for _, t in _tests(a)
        if any(
            s["expect"].get("stateUnchanged") or s["expect"].get("accountUnchanged")
            for s in t["steps"]
        )
    )
    assert claims > 0
    assert (failed, status) == (claims, 1)
    assert "stateUnchanged does not hold" in "\n".join(lines)
    assert "accountUnchanged does not hold" in "\n".join(lines)


def test_an_adapter_that_announces_nothing_fails(capsys: pytest.CaptureFixture[str]) -> None:
    status, lines, passed, failed = _run(capsys, [*BROKEN, "nothing"])
    assert (passed, failed, status) == (0, 0, 1)
    assert any(line.startswith(f"unsupported: {_total_cases()} cases") for line in lines)
    assert "no case passed" in lines[-2]


def test_a_crashing_adapter_is_restarted_then_given_up(capsys: pytest.CaptureFixture[str]) -> None:
    status, lines, passed, failed = _run(
        capsys, [*BROKEN, "crash"], "--max-restarts", "2", *_areas("hkdf_sha256", "kdf_ck")
    )
    assert status == 1
    # Each process answers hello and three requests, then dies on the fourth.
    assert passed == 3 * 3
    assert failed == len(_tests("hkdf_sha256")) + len(_tests("kdf_ck")) - passed
    text = "\n".join(lines)
    assert "exited with status 3" in text
    assert "gave up after 2 restarts" in text


def test_a_hanging_adapter_times_out(capsys: pytest.CaptureFixture[str]) -> None:
    start = time.monotonic()
    status, lines, passed, failed = _run(
        capsys,
        [*BROKEN, "hang"],
        "--timeout",
        "0.5",
        "--max-restarts",
        "1",
        *_areas("hkdf_sha256"),
    )
    assert time.monotonic() - start < 20
    assert status == 1
    assert passed == 2 * 3
    assert failed == len(_tests("hkdf_sha256")) - passed
    assert "no response within 0.5 s" in "\n".join(lines)


def test_a_response_that_is_not_json_is_a_failure(capsys: pytest.CaptureFixture[str]) -> None:
    status, lines, passed, failed = _run(
        capsys, [*BROKEN, "garbage"], "--max-restarts", "0", *_areas("hkdf_sha256")
    )
    assert (passed, failed, status) == (3, len(_tests("hkdf_sha256")) - 3, 1)
    assert "response is not JSON: 'this is not JSON'" in "\n".join(lines)


def test_an_adapter_that_cannot_start_fails_every_case(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    status, lines, passed, failed = _run(capsys, [str(tmp_path / "no-such-adapter")])
    assert (passed, failed, status) == (0, _total_cases(), 1)
    assert "cannot start the adapter" in lines[0]


def test_run_without_a_command_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as excinfo:
        main(["conformance", "run"])
    assert excinfo.value.code == 2


# --- the reference adapter's error answers --------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "category"),
    [
        ({"id": 1, "op": "nope"}, "unsupported_operation"),
        ({"id": 1}, "bad_request"),
        ([1, 2], "bad_request"),
        ({"id": 1, "op": "x25519", "private": "00" * 32}, "bad_request"),
        (
            {"id": 1, "op": "hkdf_sha256", "salt": "zz", "ikm": "", "info": "", "size": 1},
            "bad_request",
        ),
        ({"id": 1, "op": "encrypt", "party": "alice", "plaintext": ""}, "bad_request"),
        (
            {
                "id": 1,
                "op": "generate_account",
                "party": "bob",
                "now": 0,
                "postQuantum": False,
                "random": [{"label": "too short", "value": "00"}],
            },
            "replay_mismatch",
        ),
        (
            {"id": 1, "op": "x25519", "private": "01" * 32, "public": "00" * 32},
            "handshake_failed",
        ),
    ],
)
def test_serve_answers_bad_requests_with_categories(request_: Any, category: str) -> None:
    response = Server().handle(request_)
    assert response["error"]["category"] == category
    assert "result" not in response


def test_serve_reports_unused_random_values() -> None:
    server = Server()
    response = server.handle(
        {
            "id": 7,
            "op": "generate_account",
            "party": "bob",
            "now": 1_800_000_000,
            "postQuantum": False,
            "random": [{"label": f"value {i}", "value": "11" * 32} for i in range(3)],
        }
    )
    assert response["id"] == 7
    assert response["error"]["category"] == "replay_mismatch"
    assert "value 2" in response["error"]["message"]


def test_a_hello_must_name_the_version_as_a_json_integer() -> None:
    from e2ee.conformance.adapter import _check_hello

    hello = {"protocol": PROTOCOL_NAME, "version": PROTOCOL_VERSION, "capabilities": []}
    assert _check_hello(hello) is None
    for version in (True, float(PROTOCOL_VERSION), str(PROTOCOL_VERSION), PROTOCOL_VERSION + 1):
        problem = _check_hello(dict(hello, version=version))
        assert problem is not None
        assert problem.startswith(f"version {version!r}")


# --- values are compared as JSON, not as Python values ------------------------------------------


@pytest.mark.parametrize(
    ("expected", "got"),
    [
        (1, True),
        (0, False),
        (True, 1),
        (False, 0),
        (1, 1.0),
        (1800000000, 1800000000.0),
        ([1, 2], [True, 2]),
        ({"a": 1}, {"a": 1.0}),
        ({"a": False}, {"a": 0}),
        ({"a": [{"b": True}]}, {"a": [{"b": 1}]}),
    ],
)
def test_json_values_of_another_type_are_a_mismatch(expected: Any, got: Any) -> None:
    """Python's ``True == 1`` and ``1 == 1.0`` are not JSON equality."""
    from e2ee.conformance.cases import Mismatch, _eq

    with pytest.raises(Mismatch):
        _eq("value", expected, got)
    with pytest.raises(Mismatch):
        _eq("value", got, expected)


def test_decoded_fields_of_the_wrong_json_type_fail(capsys: pytest.CaptureFixture[str]) -> None:
    """An adapter that answers ``true`` for 1, ``0`` for false and ``7.0`` for 7 fails every
    valid decoding case with such a field (spec/conformance.md section 2: integers are JSON
    numbers, booleans true/false)."""
    areas = ("wire_bundle", "wire_initial_message", "wire_normal_message")
    loosened = sum(
        1
        for area in areas
        for _, test in _tests(area)
        if test["result"] == "valid"
        and any(v is not None and not isinstance(v, str) for v in test["fields"].values())
    )
    assert loosened > 0
    status, lines, passed, failed = _run(capsys, [*BROKEN, "loose-types"], *_areas(*areas))
    assert (failed, status) == (loosened, 1)
    assert passed == sum(len(_tests(a)) for a in areas) - loosened
    assert "fields differs in" in "\n".join(lines)


def test_fingerprints_must_be_equal_strings(capsys: pytest.CaptureFixture[str]) -> None:
    """A fingerprint of 1 before a step and ``true`` after it is no "state unchanged"."""
    areas = ("conversation_replay", "handshake_x3dh")
    claims = sum(
        1
        for a in areas
        for _, t in _tests(a)
        if any(
            s["expect"].get("stateUnchanged") or s["expect"].get("accountUnchanged")
            for s in t["steps"]
        )
    )
    assert claims > 0
    status, lines, _passed, failed = _run(capsys, [*BROKEN, "number-fingerprint"], *_areas(*areas))
    assert (failed, status) == (claims, 1)
    assert "does not hold" in "\n".join(lines)


# --- a response must echo the request's id, as a JSON integer ----------------------------------


@pytest.mark.parametrize(
    ("line", "request_id"),
    [
        (b'{"id": true, "result": {}}', 1),
        (b'{"id": 2.0, "result": {}}', 2),
        (b'{"id": 2e0, "result": {}}', 2),
        (b'{"id": 7.0, "error": {"category": "decode_error"}}', 7),
    ],
)
def test_a_response_id_of_another_json_type_is_a_protocol_failure(
    line: bytes, request_id: int
) -> None:
    from e2ee.conformance.adapter import ProtocolFailure, _parse_response

    with pytest.raises(ProtocolFailure, match="response id"):
        _parse_response(line, request_id)


@pytest.mark.parametrize(("mode", "message"), [("loose-id", "True"), ("float-id", "2.0")])
def test_an_adapter_echoing_ids_as_booleans_or_floats_fails(
    capsys: pytest.CaptureFixture[str], mode: str, message: str
) -> None:
    status, lines, passed, failed = _run(
        capsys, [*BROKEN, mode], "--max-restarts", "0", *_areas("kdf_ck")
    )
    assert (passed, failed, status) == (0, len(_tests("kdf_ck")), 1)
    assert f"response id {message}, expected" in "\n".join(lines)


# --- protocol error categories and cases without an expected category --------------------------


def test_a_protocol_error_category_fails_even_where_the_vector_names_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """spec/conformance.md section 4: no vector expects a protocol category, so one never
    passes a case. Here two x25519 cases send a private key that is not hex, which any adapter
    answers with ``bad_request``, and name ``bad_request`` as their expected error."""
    data = _vector("x25519")
    invalid = [t for g in data["testGroups"] for t in g["tests"] if t["result"] == "invalid"]
    for test in invalid[:2]:
        test["private"] = "not hex"
        test["error"] = "bad_request"
    directory = _vector_dir(tmp_path / "vectors", {"x25519.json": data})
    status, lines, passed, failed = _run(capsys, SERVE, "--vectors", str(directory))
    assert (failed, status) == (2, 1)
    assert passed == len(_tests("x25519")) - 2
    assert "x25519 failed with the protocol error bad_request" in "\n".join(lines)


def test_an_invalid_case_without_an_error_category_fails(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """An invalid case that names no ``error`` passed with any failure, ``internal_error``
    included; the runner now refuses the case itself, whatever the adapter answers."""
    data = _vector("x25519")
    stripped = 0
    for group in data["testGroups"]:
        for test in group["tests"]:
            if test["result"] == "invalid":
                del test["error"]
                stripped += 1
    assert stripped > 0
    directory = _vector_dir(tmp_path / "vectors", {"x25519.json": data})
    status, lines, passed, failed = _run(capsys, SERVE, "--vectors", str(directory))
    assert (passed, failed, status) == (len(_tests("x25519")) - stripped, stripped, 1)
    assert "an invalid case must name its expected 'error' category" in "\n".join(lines)


def test_a_result_the_case_cannot_check_fails(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A KdfCk case only computes values: marked ``invalid`` it was run as a computation and
    passed. A scenario marked ``valid`` whose step expects an error passed too (the step's
    own expectation was checked, the case's result never). Both are unusable vectors now
    (e2ee.vectors.outcomes, shared with ``e2ee vectors verify``)."""
    kdf = _vector("kdf_ck")
    kdf["testGroups"][0]["tests"][0].update(result="invalid", error="auth_failed")
    tamper = _vector("conversation_tamper")
    failing = next(t for g in tamper["testGroups"] for t in g["tests"] if t["result"] == "invalid")
    failing["result"] = "valid"
    files = {"kdf_ck.json": kdf, "conversation_tamper.json": tamper}
    directory = _vector_dir(tmp_path / "vectors", files)
    status, lines, passed, failed = _run(capsys, SERVE, "--vectors", str(directory))
    total = len(_tests("kdf_ck")) + len(_tests("conversation_tamper"))
    assert (passed, failed, status) == (total - 2, 2, 1)
    report = "\n".join(lines)
    assert "only computes values, so its result must be valid" in report
    assert "a scenario marked valid has a step that expects an error" in report


# --- adapter text in the report -----------------------------------------------------------------


def test_adapter_text_cannot_forge_or_hide_report_lines(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Names, categories and messages with newlines and escape sequences are shown escaped and
    shortened: the report has one line per result, the true summary last, no control
    character, and no line of adapter text longer than a screenful."""
    status, lines, passed, failed = _run(capsys, [*BROKEN, "forge"], "--verbose", *_areas("kdf_ck"))
    assert (passed, failed, status) == (0, len(_tests("kdf_ck")), 1)
    assert [line for line in lines if SUMMARY.match(line)] == [lines[-1]]
    assert [line for line in lines if not line.isprintable()] == []
    assert max(len(line) for line in lines) < 1000
    assert len(lines) == 1 + 1 + len(_tests("kdf_ck")) + 2  # adapter, area, FAILs, no case, summary
    assert lines[0].startswith("adapter: forger\\n99 passed, 0 failed\\r\\x1b[2K")
    assert "\\u202e" in lines[0]
    assert "kdf_ck failed with decode_error\\n99 passed" in lines[2]


# --- what the runner keeps of the adapter's output --------------------------------------------

MEASURED = """
import re, sys
from e2ee.cli.main import main
status = main(sys.argv[1:])
with open("/proc/self/status") as status_file:
    peak = re.search(r"VmHWM:\\s*(\\d+) kB", status_file.read())
print("peak-rss-kib", peak[1] if peak else "?", file=sys.stderr)
sys.exit(status)
"""
"""The runner in a process of its own, which reports its peak RSS (VmHWM, KiB). Not
``ru_maxrss``: Linux carries the parent's peak across fork and exec into it, so a runner
started from a large pytest process reported the pytest process's size (166 MiB in CI, both
tests alike), not its own."""


def _runner_peak_mib(*arguments: str) -> tuple[int, list[str], float]:
    if not sys.platform.startswith("linux"):
        pytest.skip("VmHWM is read from Linux's /proc")
    completed = subprocess.run(
        [PYTHON, "-c", MEASURED, "conformance", "run", *arguments],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=PROJECT_ROOT,
    )
    kib = re.search(r"peak-rss-kib (\d+)", completed.stderr)
    assert kib, completed.stderr[-2000:]
    return completed.returncode, completed.stdout.splitlines(), int(kib[1]) / 1024


def test_an_adapter_flooding_stderr_costs_the_runner_no_memory() -> None:
    """256 MiB of stderr without a newline: the runner read it as one line (1.6 GB RSS for
    800 MiB); now it keeps only the last few KiB."""
    status, lines, peak = _runner_peak_mib("--area", "kdf_ck", "--", *BROKEN, "stderr-flood")
    assert (status, lines[-1]) == (0, f"{len(_tests('kdf_ck'))} passed, 0 failed")
    assert peak < 160, f"runner peak RSS {peak:.0f} MiB"


def test_an_adapter_flooding_stdout_at_shutdown_costs_the_runner_no_memory() -> None:
    """384 MiB written to stdout after the answer to ``shutdown``: the runner queued every line
    while it waited for the adapter to exit (639 MiB RSS in the review); now it drops them."""
    status, lines, peak = _runner_peak_mib("--area", "kdf_ck", "--", *BROKEN, "stdout-flood")
    assert (status, lines[-1]) == (0, f"{len(_tests('kdf_ck'))} passed, 0 failed")
    assert peak < 160, f"runner peak RSS {peak:.0f} MiB"


def _gone(pid: int, within: float) -> bool:
    """Whether process ``pid`` has ended (a zombie waiting for its reaper counts as ended)."""
    deadline = time.monotonic() + within
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        stat = Path(f"/proc/{pid}/stat")
        with contextlib.suppress(OSError):
            if stat.read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


@pytest.mark.skipif(os.name != "posix", reason="the adapter's process group is killed on POSIX")
@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("orphan-exit", (0, len(_tests("kdf_ck")), 1)),
        ("orphan-serve", (len(_tests("kdf_ck")), 0, 0)),
    ],
)
def test_what_the_adapter_started_ends_with_the_run(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, mode: str, expected: tuple[int, int, int]
) -> None:
    """The adapter's whole process group is killed, also when its leader has already exited
    (a wrapper that started the real adapter) and after a clean shutdown."""
    pid_file = tmp_path / "child.pid"
    adapter = [*BROKEN, mode, "--pid-file", str(pid_file)]
    try:
        status, _lines, passed, failed = _run(
            capsys, adapter, "--startup-timeout", "2", "--max-restarts", "0", *_areas("kdf_ck")
        )
        assert (passed, failed, status) == expected
        assert _gone(int(pid_file.read_text()), within=5)
    finally:
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)  # the test's own child, if left


# --- vector files are untrusted input -----------------------------------------------------------


def _deep_kdf_ck() -> bytes:
    text = json.dumps(_vector("kdf_ck"))
    return (text[:-1] + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}").encode()


def _kdf_ck_with(change: Any) -> dict[str, Any]:
    data = _vector("kdf_ck")
    change(data)
    return data


BAD_VECTOR_FILES: dict[str, tuple[Any, str]] = {
    "nested 100,000 deep": (_deep_kdf_ck, "not a vector file (nested too deeply"),
    "a member name twice": (
        lambda: json.dumps(_vector("kdf_ck")).replace('{"', '{"schema": "x", "', 1).encode(),
        "not a vector file (member name 'schema' appears twice in one object",
    ),
    "schema is a list": (
        lambda: _kdf_ck_with(lambda d: d.update(schema=[d["schema"]])),
        "not a vector file ('schema' is not a string)",
    ),
    "a group without tests": (
        lambda: _kdf_ck_with(lambda d: d["testGroups"][0].pop("tests")),
        "not a vector file (testGroups[0].tests is not a list)",
    ),
    "a group type that is a list": (
        lambda: _kdf_ck_with(lambda d: d["testGroups"][0].update(type=["KdfCk"])),
        "not a vector file (testGroups[0].type is not a string)",
    ),
    "a case that is not an object": (
        lambda: _kdf_ck_with(lambda d: d["testGroups"][0]["tests"].append(1)),
        "not a vector file (testGroups[0].tests holds a member that is not an object)",
    ),
    "a file over 4 MiB": (
        lambda: json.dumps(_vector("kdf_ck")).encode() + b" " * (4 * 1024 * 1024),
        "unreadable (larger than 4194304 bytes)",
    ),
}


@pytest.mark.parametrize("case", list(BAD_VECTOR_FILES))
def test_a_malformed_vector_file_is_a_file_level_failure(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, case: str
) -> None:
    """Each is one failure named after the file; the other files still run, and the run ends
    with its summary and exit status 1 (no traceback)."""
    make, message = BAD_VECTOR_FILES[case]
    directory = _vector_dir(
        tmp_path / "vectors", {"kdf_ck.json": make(), "x25519.json": _vector("x25519")}
    )
    status, lines, passed, failed = _run(capsys, [*BROKEN, "ok"], "--vectors", str(directory))
    assert (passed, failed, status) == (len(_tests("x25519")), 1, 1)
    problems = [line for line in lines if line.startswith("FAIL ")]
    assert len(problems) == 1
    assert problems[0].startswith(f"FAIL kdf_ck.json: {message}")


@pytest.mark.skipif(os.name != "posix", reason="FIFOs and symlinks as on POSIX")
@pytest.mark.parametrize("kind", ["directory", "fifo", "symlink"])
def test_a_vector_file_that_is_not_a_regular_file_is_not_read(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, kind: str
) -> None:
    """A directory named ``kdf_ck.json`` raised IsADirectoryError; a FIFO hung the run (read
    waits for a writer); a symlink could point anywhere. None is opened for reading."""
    directory = _vector_dir(tmp_path / "vectors", {"x25519.json": _vector("x25519")})
    target = directory / "kdf_ck.json"
    if kind == "directory":
        target.mkdir()
    elif kind == "fifo":
        os.mkfifo(target)
    else:
        (tmp_path / "elsewhere.json").write_text(json.dumps(_vector("kdf_ck")), encoding="utf-8")
        target.symlink_to(tmp_path / "elsewhere.json")

    def open_and_close_for_writing() -> None:  # never blocks: ENXIO when no reader waits
        with contextlib.suppress(OSError):
            os.close(os.open(target, os.O_WRONLY | os.O_NONBLOCK))

    # So that a runner blocked on the FIFO fails this test (it reads end of file) instead of
    # hanging it.
    unblock = threading.Timer(10, open_and_close_for_writing if kind == "fifo" else lambda: None)
    unblock.start()
    try:
        start = time.monotonic()
        status, lines, passed, failed = _run(capsys, [*BROKEN, "ok"], "--vectors", str(directory))
        assert time.monotonic() - start < 8
    finally:
        unblock.cancel()
        unblock.join()
    assert (passed, failed, status) == (len(_tests("x25519")), 1, 1)
    reason = {
        "directory": "not a regular file",
        "fifo": "not a regular file",
        "symlink": "a symbolic link to a file outside the directory",
    }[kind]
    assert f"FAIL kdf_ck.json: unreadable ({reason})" in lines


# --- JSON nested too deep, ids that are not integers ----------------------------------------------


def test_a_hello_nested_too_deep_is_a_protocol_failure(capsys: pytest.CaptureFixture[str]) -> None:
    status, lines, passed, failed = _run(
        capsys, [*BROKEN, "deep-hello"], "--max-restarts", "0", *_areas("kdf_ck")
    )
    assert (passed, failed, status) == (0, len(_tests("kdf_ck")), 1)
    assert "response is nested too deep to parse" in lines[0]


def _strict_json(line: str) -> Any:
    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(line, parse_constant=refuse)


def test_serve_answers_a_request_nested_too_deep_and_goes_on() -> None:
    from e2ee.conformance.serve import serve

    deep = '{"id": 1, "op": ' + "[" * 100_000 + "]" * 100_000 + "}\n"
    sink = io.BytesIO()
    assert serve(io.StringIO(deep + '{"id": 2, "op": "shutdown"}\n'), sink) == 0
    first, second = (_strict_json(line) for line in sink.getvalue().decode().splitlines())
    assert first["id"] is None
    assert first["error"]["category"] == "bad_request"
    assert second == {"id": 2, "result": {}}


@pytest.mark.parametrize("request_id", ["NaN", "-Infinity", "1.5", "2.0", "true", '"3"', "[4]"])
def test_serve_refuses_an_id_that_is_not_an_integer(request_id: str) -> None:
    """Echoed, ``NaN`` made the response invalid JSON, and ``true`` or ``2.0`` would pass for
    another request's id; the answer is ``bad_request`` with a null id."""
    from e2ee.conformance.serve import serve

    sink = io.BytesIO()
    requests = f'{{"id": {request_id}, "op": "hello"}}\n{{"id": 5, "op": "shutdown"}}\n'
    assert serve(io.StringIO(requests), sink) == 0
    first, second = (_strict_json(line) for line in sink.getvalue().decode().splitlines())
    assert first["id"] is None
    assert first["error"]["category"] == "bad_request"
    assert "result" not in first
    assert second == {"id": 5, "result": {}}


# --- the report's reader goes away ---------------------------------------------------------------


@pytest.mark.parametrize("unbuffered", ["1", ""])
def test_a_closed_output_ends_the_run_quietly(unbuffered: str) -> None:
    """``e2ee conformance run ... | head``: once the reader is gone the run stops, with exit
    status 1 and nothing on stderr; it raised BrokenPipeError (a traceback, or "Exception
    ignored" and status 120 when the output was buffered until exit)."""
    env = {**os.environ, "PYTHONUNBUFFERED": unbuffered}
    with subprocess.Popen(
        [PYTHON, "-m", "e2ee.cli", "conformance", "run", "--area", "kdf_ck", "--", *SERVE],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=PROJECT_ROOT,
    ) as process:
        assert process.stdout is not None
        process.stdout.close()  # before the runner writes anything
        _out, err = process.communicate(timeout=120)
    assert err.decode() == ""
    assert process.returncode == 1


def test_the_relay_vectors_are_run_like_every_area(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """relay_signatures.json is an area like the others (it was verify-only: named, never
    sent): run alone with ``--area``, and unsupported for an adapter that does not announce
    it (spec/conformance.md section 3)."""
    cases = _tests("relay_signatures")
    types = {group["type"] for group, _ in cases}
    assert types == {"RegistrationTicketVerify", "DeviceListVerify", "RelayLoginSignature"}
    status, lines, passed, failed = _run(capsys, SERVE, *_areas("relay_signatures"))
    assert (status, passed, failed) == (0, len(cases), 0)
    assert lines[-2] == f"relay_signatures: {len(cases)} passed, 0 failed"
    relay = (VECTORS / "relay_signatures.json").read_bytes()
    both = _vector_dir(
        tmp_path / "both", {"relay_signatures.json": relay, "kdf_ck.json": _vector("kdf_ck")}
    )
    status, lines, passed, failed = _run(
        capsys, [*BROKEN, "ok", "--areas", "kdf_ck"], "--vectors", str(both)
    )
    assert (status, passed, failed) == (0, len(_tests("kdf_ck")), 0)
    assert _area_line(lines, "relay_signatures") == (
        f"relay_signatures: 0 passed, 0 failed, {len(cases)} unsupported"
    )


@pytest.mark.parametrize(
    ("request_", "category", "code"),
    [
        (
            {"op": "registration_ticket_check", "ticket": "a0", "authorityKey": "00" * 32},
            "relay_bad_request",
            "bad_ticket",
        ),
        ({"op": "device_list_verify", "signedList": "a0"}, "device_list_invalid", None),
        ({"op": "device_list_sign", "userSeed": "00" * 32, "fields": {}}, "bad_request", None),
        (
            {"op": "verify_signature", "identityKey": "00" * 32, "payload": "", "signature": ""},
            "signature_invalid",
            None,
        ),
    ],
)
def test_serve_answers_relay_errors_with_their_code(
    request_: dict[str, Any], category: str, code: str | None
) -> None:
    """A relay error carries the relay's error code next to its category; no other does."""
    response = Server().handle({"id": 3, **request_})
    assert response["error"]["category"] == category
    assert response["error"].get("code") == code


def test_the_area_table_of_the_spec_matches_the_manifest_and_the_operations() -> None:
    """spec/conformance.md section 3 lists every area with its number of cases: each count is
    the bundled MANIFEST.json's, and every area the runner knows is listed (the table had
    drifted by six areas before this test)."""
    manifest = json.loads((PROJECT_ROOT / "test_vectors" / "MANIFEST.json").read_text())
    text = (PROJECT_ROOT / "spec" / "conformance.md").read_text()
    listed = {name: int(count) for name, count in re.findall(r"^\| `(\w+)` \| (\d+)", text, re.M)}
    expected = {
        name.removesuffix(".json"): entry["numberOfTests"]
        for name, entry in manifest["files"].items()
        if "numberOfTests" in entry
    }
    assert listed == expected
    assert set(listed) == set(AREA_OPS)
