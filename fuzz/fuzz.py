"""Coverage-guided fuzzing of one target of fuzz/targets.py.

    .venv/bin/python fuzz/fuzz.py TARGET [libFuzzer options] [CORPUS_DIR ...]
    .venv/bin/python fuzz/fuzz.py --list
    .venv/bin/python fuzz/fuzz.py --write-seeds DIR   # DIR/TARGET/seed-N for every target

With atheris installed (``.venv/bin/pip install atheris``) this is libFuzzer driving the target
with e2ee's modules instrumented. Without atheris it falls back to hypothesis' ``fuzz_one_input``
fed with libFuzzer-free random mutations of the seeds, for ``-max_total_time`` seconds (no
coverage guidance; crashes are still written to ``-artifact_prefix``).
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

try:
    import atheris  # type: ignore[import-untyped, import-not-found, unused-ignore]
except ImportError:  # pragma: no cover - depends on the machine
    atheris = None

_COMMAND = sys.argv[1] if len(sys.argv) > 1 else "--help"
if atheris is not None and __name__ == "__main__" and not _COMMAND.startswith("-"):
    # Instrument e2ee (and the CBOR library it decodes with) before anything imports them.
    with atheris.instrument_imports(include=["e2ee", "cbor2"]):
        import e2ee  # noqa: F401


def _option(argv: list[str], name: str, default: str) -> str:
    for arg in argv:
        if arg.startswith(f"-{name}="):
            return arg.split("=", 1)[1]
    return default


def write_seeds(directory: Path) -> None:
    from fuzz import targets

    for name in targets.TARGETS:
        target_dir = directory / name
        target_dir.mkdir(parents=True, exist_ok=True)
        for index, seed in enumerate(targets.seeds(name)):
            (target_dir / f"seed-{index}").write_bytes(seed)


def fallback(target: str, argv: list[str]) -> int:
    """Time-boxed random mutation of the seeds through hypothesis (no atheris)."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from fuzz import targets

    budget = float(_option(argv, "max_total_time", "10"))
    prefix = _option(argv, "artifact_prefix", "./")
    seeds = targets.seeds(target)

    @settings(database=None, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        seed=st.sampled_from(seeds),
        edits=st.lists(st.tuples(st.integers(0, 2**20), st.integers(0, 255), st.integers(0, 3))),
        raw=st.binary(),
    )
    def one(seed: bytes, edits: list[tuple[int, int, int]], raw: bytes) -> None:
        data = bytearray(seed if edits else raw)
        for position, value, kind in edits:
            at = position % (len(data) + 1)
            if kind == 0 and at < len(data):
                data[at] ^= value or 1
            elif kind == 1:
                data.insert(at, value)
            elif kind == 2:
                del data[at : at + 1 + value % 16]
            else:
                data[at:at] = data[at : at + 1 + value]
        try:
            targets.run(target, bytes(data))
        except BaseException:
            digest = hashlib.sha1(bytes(data)).hexdigest()  # noqa: S324 - a file name
            Path(f"{prefix}crash-{digest}").write_bytes(bytes(data))
            raise

    fuzz_one_input: Any = one.hypothesis.fuzz_one_input  # type: ignore[attr-defined]
    end = time.monotonic() + budget
    runs = 0
    while time.monotonic() < end:
        fuzz_one_input(os.urandom(512))
        runs += 1
    print(f"fallback fuzzing of {target}: {runs} inputs, no crash")
    return 0


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(__doc__)
        return 2
    from fuzz import targets

    if argv[1] == "--list":
        print("\n".join(targets.TARGETS))
        return 0
    if argv[1] == "--write-seeds":
        write_seeds(Path(argv[2]))
        return 0
    target = argv[1]
    if target not in targets.TARGETS:
        print(f"unknown target {target!r}; --list shows them", file=sys.stderr)
        return 2
    rest = [argv[0], *argv[2:]]
    if atheris is None:
        return fallback(target, rest)
    targets.context()

    def test_one_input(data: bytes) -> None:
        targets.run(target, data)

    atheris.Setup(rest, test_one_input)
    atheris.Fuzz()
    return 0  # pragma: no cover - atheris.Fuzz() exits the process


if __name__ == "__main__":
    sys.exit(main(sys.argv))
