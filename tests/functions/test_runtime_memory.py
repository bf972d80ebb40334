"""The runtime takes the process's long-lived objects out of the collector's full passes, once.

Checked in a fresh interpreter (this test process has its own history): importing the app and
building the runtime the way the first invocation does leaves most tracked objects frozen, and a
rebuilt runtime (a new event loop) does not freeze again, so nothing made afterwards is kept from
the collector.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import gc, json
import function_app
from hitl_core.functions.runtime import get_runtime, reset_runtime
before = gc.get_freeze_count()
tracked_before = len(gc.get_objects())
get_runtime()
first = gc.get_freeze_count()
garbage = [[] for _ in range(1000)]
for item in garbage:
    item.append(item)  # cycles made after the freeze
reset_runtime()
get_runtime()
second = gc.get_freeze_count()
del garbage, item
print(json.dumps({"before": before, "first": first, "tracked_before": tracked_before, "second": second,
                  "collected": gc.collect()}))
"""


def test_the_first_runtime_freezes_what_was_loaded_and_later_objects_stay_collectable(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HITL_DATA_DIR": str(tmp_path), "HITL_SMTP_HOST": "off"}
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120, check=True)
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["before"] == 0
    assert seen["first"] >= seen["tracked_before"] > 10_000  # all that the app loaded is out of the full passes
    assert seen["second"] - seen["first"] < 1000  # once per process: the 1,000 cycles made since were not frozen
    assert seen["collected"] >= 1000  # and are still the collector's to free
