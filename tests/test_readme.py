"""The README's first two commands and its Python examples stay true: ```python blocks are run;
```py blocks (which need a running relay) are compiled."""

from __future__ import annotations

import re

from tests.conftest import PROJECT_ROOT

README = (PROJECT_ROOT / "README.md").read_text()


def test_readme_opens_with_the_demo_and_test_commands() -> None:
    block = re.search(r"```bash\n(.*?)```", README, re.S)
    assert block is not None
    lines = block.group(1).strip().splitlines()
    assert len(lines) == 2
    assert lines[0].endswith("e2ee demo  # demo")
    assert "pytest" in lines[1]
    assert lines[1].endswith("# tests")
    assert README.index("```bash") < README.index("##")  # before any section


def test_readme_python_examples_run() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    assert blocks, "the README has no Python example"
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {})  # our own documentation


def test_readme_relay_examples_compile() -> None:
    blocks = re.findall(r"```py\n(.*?)```", README, re.S)
    assert blocks, "the README has no relay-client example"
    for code in blocks:
        compile(code, "README.md", "exec")
