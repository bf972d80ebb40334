"""Parse Bicep and YAML files with the tools of the infra venv and print the result as JSON.

Runs with ``.venv-infra/bin/python`` (see ``conftest.py``), never imported by the test process:
pycep-parser and PyYAML live only in that venv. Usage::

    python _infra_tool.py --bicep a.bicep b.bicep --yaml azure.yaml

prints ``{"bicep": {path: {"ok": true, "template": ...} | {"ok": false, "error": str}},
"yaml": {path: {"ok": ..., "document": ...}}}``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def parse_bicep(paths: list[str]) -> dict[str, Any]:
    from pycep import BicepParser

    parser = BicepParser()
    results: dict[str, Any] = {}
    for path in paths:
        try:
            results[path] = {"ok": True, "template": parser.parse(file_path=Path(path))}
        except Exception as exc:  # every parser failure is a finding, reported per file
            results[path] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    return results


def parse_yaml(paths: list[str]) -> dict[str, Any]:
    import yaml

    results: dict[str, Any] = {}
    for path in paths:
        try:
            results[path] = {"ok": True, "document": yaml.safe_load(Path(path).read_text(encoding="utf-8"))}
        except Exception as exc:
            results[path] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    return results


def main(argv: list[str]) -> int:
    args = argparse.ArgumentParser()
    args.add_argument("--bicep", nargs="*", default=[])
    args.add_argument("--yaml", nargs="*", default=[])
    ns = args.parse_args(argv)
    out = {"bicep": parse_bicep(ns.bicep), "yaml": parse_yaml(ns.yaml)}
    json.dump(out, sys.stdout, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
