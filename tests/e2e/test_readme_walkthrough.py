"""The README's walkthroughs run as written against `make run`'s host and print what they say.

Each block is taken from README.md (after a ``walkthrough:<name>`` marker) and run with bash,
curl and jq — the tools a reader uses — on a fresh host, with only the port changed to the test host's.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.host import running_host

README = Path(__file__).resolve().parents[2] / "README.md"
WALKTHROUGHS = re.findall(r"<!-- walkthrough:([a-z-]+) ", README.read_text(encoding="utf-8"))


def test_the_readme_has_its_walkthroughs() -> None:
    assert {"try-it", "out-of-office", "refund-agent"} <= set(WALKTHROUGHS)


def blocks(name: str) -> tuple[str, str]:
    """(the shell block, the printed output it promises)."""
    text = README.read_text(encoding="utf-8")
    after = text[text.index(f"<!-- walkthrough:{name} "):]
    script = after.split("```sh\n", 1)[1].split("```", 1)[0]
    printed = after.split("It prints:", 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    return script, printed


@pytest.mark.parametrize("name", WALKTHROUGHS)
def test_walkthrough_runs_as_written(tmp_path: Path, name: str) -> None:
    for tool in ("bash", "curl", "jq"):
        assert shutil.which(tool), f"the walkthrough needs {tool} (Debian: apt-get install {tool})"
    script, printed = blocks(name)
    with running_host(tmp_path / "data") as host:
        local = script.replace("127.0.0.1:7071", f"127.0.0.1:{host.port}")
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", local],
                              capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout == printed
