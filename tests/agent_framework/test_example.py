"""The README's Agent Framework example is the file that runs: the same lines, and it runs both ways."""

from __future__ import annotations

import re
from pathlib import Path

from examples import agent_framework_on_hitl as example

ROOT = Path(__file__).resolve().parents[2]


def test_the_readme_shows_the_lines_of_the_example_that_runs() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Agent Framework workflows", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```python\n(.*?)```", section, re.S)
    assert block is not None
    source = (ROOT / "examples" / "agent_framework_on_hitl.py").read_text(encoding="utf-8")
    shown = [line for line in block.group(1).splitlines() if line.strip()]
    assert len(shown) >= 15
    position = 0
    for line in shown:  # every line, in the same order
        found = source.find(line + "\n", position)
        assert found >= 0, f"the README shows a line the example does not have (in this order): {line!r}"
        position = found + len(line)


async def test_the_example_runs_before_and_after(tmp_path: Path) -> None:
    assert await example.before(tmp_path / "af") == "published: Introducing Otter 2"
    assert await example.after(tmp_path / "hitl.db") == "published: Introducing Otter 2"
