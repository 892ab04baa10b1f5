"""spec/TRACEABILITY.md stays in step with the specification, the code and the tests.

* Every requirement id ``[REQ-AREA-NN]`` used in spec/*.md has a row in the table, and every
  row's id is used in the specification (or is marked withdrawn); no id appears twice.
* Every row names at least one test, none is ``TODO``, and every named test exists: the file
  under tests/ and the test function in it (found with ``ast``, so nothing is imported).
* Every ``module::name`` in the code column exists under src/e2ee/.
* Every paragraph of the specification that carries a BCP 14 requirement keyword (MUST,
  MUST NOT, REQUIRED, SHALL, SHALL NOT) carries a requirement id.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT

SPEC = PROJECT_ROOT / "spec"
TABLE = SPEC / "TRACEABILITY.md"
TESTS = PROJECT_ROOT / "tests"
SRC = PROJECT_ROOT / "src" / "e2ee"
AREAS = ("PRIM", "WIRE", "HS", "DR", "STATE", "LIM", "ERR", "SEC", "CL", "RL")
ID = re.compile(r"\[(REQ-([A-Z]+)(?:-[A-Z]+)?-(\d{2}))\]")
TEST_REF = re.compile(r"`(tests/[\w/]+\.py)::([\w.]+)`")
CODE_REF = re.compile(r"`([a-z_][\w.]*)::([\w.]+)`")
KEYWORD = re.compile(r"\b(MUST|SHALL|REQUIRED)\b")


@dataclass(frozen=True)
class Row:
    id: str
    requirement: str
    code: str
    test: str


def _spec_documents() -> list[Path]:
    return sorted(p for p in SPEC.glob("*.md") if p != TABLE)


@cache
def spec_ids() -> dict[str, list[str]]:
    """Requirement id -> the documents that use it."""
    found: dict[str, list[str]] = {}
    for path in _spec_documents():
        for match in ID.finditer(path.read_text(encoding="utf-8")):
            found.setdefault(match[1], []).append(path.name)
    return found


@cache
def rows() -> tuple[Row, ...]:
    out = []
    for line in TABLE.read_text(encoding="utf-8").splitlines():
        if not line.startswith("| REQ-"):
            continue
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip()[1:-1])]
        assert len(cells) == 4, f"malformed row: {line[:80]}"
        out.append(Row(*cells))
    return tuple(out)


@cache
def _definitions(path: Path) -> frozenset[str]:
    """Top-level functions and classes of a module, plus ``Class.member`` names."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        if isinstance(node, ast.ClassDef):
            for member in node.body:
                if isinstance(member, ast.FunctionDef | ast.AsyncFunctionDef):
                    names.add(f"{node.name}.{member.name}")
                elif isinstance(member, ast.AnnAssign) and isinstance(member.target, ast.Name):
                    names.add(f"{node.name}.{member.target.id}")
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return frozenset(names)


def test_the_specification_uses_requirement_ids() -> None:
    ids = spec_ids()
    assert len(ids) >= 100
    for requirement_id in ids:
        area = requirement_id.split("-")[1]
        assert area in AREAS, f"{requirement_id}: unknown area (spec/README.md lists them)"


def test_every_requirement_id_has_a_row() -> None:
    table_ids = {row.id for row in rows()}
    missing = sorted(set(spec_ids()) - table_ids)
    assert not missing, f"ids used in spec/ but missing from TRACEABILITY.md: {missing}"


def test_every_row_is_a_requirement_of_the_specification() -> None:
    ids = [row.id for row in rows()]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    assert not duplicates, f"ids listed twice: {duplicates}"
    unknown = sorted(
        row.id
        for row in rows()
        if row.id not in spec_ids() and "withdrawn" not in row.requirement.lower()
    )
    assert not unknown, f"rows whose id the specification does not use: {unknown}"


def test_the_summary_line_counts_the_rows() -> None:
    text = TABLE.read_text(encoding="utf-8")
    match = re.search(
        r"^(\d+) requirements; (\d+) with at least one test, (\d+) TODO\.$", text, re.M
    )
    assert match, "TRACEABILITY.md lacks its 'N requirements; ...' summary line"
    tested = sum(1 for row in rows() if TEST_REF.search(row.test))
    todo = sum(1 for row in rows() if "TODO" in row.test)
    assert (int(match[1]), int(match[2]), int(match[3])) == (len(rows()), tested, todo)


def test_no_requirement_is_left_without_a_test() -> None:
    todo = [row.id for row in rows() if "TODO" in row.test]
    assert not todo, f"requirements whose test is TODO: {todo}"
    untested = [row.id for row in rows() if not TEST_REF.search(row.test)]
    assert not untested, f"requirements that name no test: {untested}"


def test_every_named_test_exists() -> None:
    problems = []
    for row in rows():
        for file_name, test_name in TEST_REF.findall(row.test):
            path = PROJECT_ROOT / file_name
            if not path.is_file():
                problems.append(f"{row.id}: {file_name} does not exist")
                continue
            if test_name not in _definitions(path):
                problems.append(f"{row.id}: {file_name} has no {test_name}")
            elif not test_name.split(".")[-1].startswith("test"):
                problems.append(f"{row.id}: {file_name}::{test_name} is not a test")
    assert not problems, "\n".join(problems)


def test_every_named_code_location_exists() -> None:
    problems = []
    for row in rows():
        for module, name in CODE_REF.findall(row.code):
            base = SRC.joinpath(*module.split("."))
            path = (
                base.with_suffix(".py")
                if base.with_suffix(".py").is_file()
                else base / ("__init__.py")
            )
            if not path.is_file():
                problems.append(f"{row.id}: no module e2ee.{module}")
            elif name not in _definitions(path):
                problems.append(f"{row.id}: e2ee.{module} has no {name}")
    assert not problems, "\n".join(problems)


def _blocks(text: str) -> list[str]:
    """Paragraphs, list items and table rows, without code blocks and quoted keywords."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    text = re.sub(r'"[A-Z ]+"', "", text)  # the keyword list of the conventions
    return [b for b in re.split(r"\n\s*\n|\n(?=\s*(?:[-*|]|\d+\.) )", text) if b.strip()]


@pytest.mark.parametrize("path", _spec_documents(), ids=lambda p: p.name)
def test_every_requirement_sentence_carries_an_id(path: Path) -> None:
    untagged = [
        block.strip()[:100]
        for block in _blocks(path.read_text(encoding="utf-8"))
        if KEYWORD.search(block)
        and not ID.search(block)
        and "is tagged with an id" not in block  # the convention that states the rule
    ]
    assert not untagged, f"{path.name}: requirement keywords without an id:\n" + "\n".join(untagged)
