"""The README's twenty-line example runs and prints what it says."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_readme_example_runs(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    code = re.search(r"## The library in twenty lines\n\n```python\n(.*?)```", readme, re.S)
    assert code is not None
    body = code.group(1)
    setup, _, rest = body.partition("paused = ")
    script = setup + "async def main():\n" + textwrap.indent("paused = " + rest, "    ") + (
        "\nimport asyncio\nasyncio.run(main())\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['About pricing']"
