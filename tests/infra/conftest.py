"""Offline validation of infra/ (Bicep + azd): the shared, once-per-session scan.

No Bicep compiler can be downloaded here, so the Bicep is checked with the two tools that install
from PyPI: pycep-parser (syntax, and the JSON model the tests inspect) and checkov (security
checks). Both run in their own venv, ``.venv-infra`` at the repository root, created on first use
from ``requirements-infra.txt`` (checkov pins old versions of common packages that must not enter
the project's ``.venv``). Set ``HITL_INFRA_VENV`` to use another location.

The scan runs once per test session, pycep and checkov in parallel:

- pycep parses every ``infra/**/*.bicep`` plus a deliberately broken canary file, and PyYAML
  loads ``azure.yaml``;
- checkov scans a copy of ``infra/`` that also holds the canary, so every run proves that a parse
  error is detected (checkov exits 0 on files it cannot parse; only ``parsing_errors`` tells).

``app_functions`` indexes the real app (``function_app.py``) once per session, so the tests
compare the Bicep with the functions the Functions host will find.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
HERE = Path(__file__).resolve().parent
REQUIREMENTS = HERE / "requirements-infra.txt"
TOOL = HERE / "_infra_tool.py"
VENV = Path(os.environ.get("HITL_INFRA_VENV", REPO / ".venv-infra"))

CANARY_NAME = "zz_canary_parse_error.bicep"
CANARY_TEXT = "resource broken 'Microsoft.Storage/storageAccounts@2023-05-01' = {\n  name: 'unclosed'\n"

# pip and checkov must not reach anything but the package index: no guideline download.
_TOOL_ENV = {"BC_SKIP_MAPPING": "TRUE", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def bicep_files() -> list[Path]:
    """Every Bicep file under infra/, sorted (collected at import time for parametrization)."""
    return sorted(INFRA.rglob("*.bicep"))


def rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


@contextlib.contextmanager
def _lock(name: str) -> Iterator[None]:
    """Serialize venv creation between concurrent pytest processes."""
    lock_path = Path(tempfile.gettempdir()) / f"{name}.lock"
    with lock_path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure_infra_venv() -> Path:
    """Create or update .venv-infra from requirements-infra.txt; return its python."""
    python = _venv_python(VENV)
    stamp = VENV / ".installed"
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    with _lock("hitl-venv-infra-" + hashlib.sha256(str(VENV).encode()).hexdigest()[:12]):
        if python.exists() and stamp.exists() and stamp.read_text() == digest:
            return python
        env = {**os.environ, **_TOOL_ENV}
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, env=env)
        result = subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "-r", str(REQUIREMENTS)],
            capture_output=True, text=True, env=env,
        )
        if result.returncode != 0:
            pytest.fail(f"could not install {rel(REQUIREMENTS)} into {VENV}:\n{result.stderr[-4000:]}")
        stamp.write_text(digest)
    return python


@dataclass
class InfraScan:
    """Everything the infra tests look at, produced once per session."""

    templates: dict[str, dict[str, Any]] = field(default_factory=dict)  # "infra/x.bicep" -> pycep JSON
    parse_errors: dict[str, str] = field(default_factory=dict)  # "infra/x.bicep" -> parser error
    canary_parse_error: str | None = None  # pycep's error for the broken canary (must not be None)
    yaml_documents: dict[str, Any] = field(default_factory=dict)  # "azure.yaml" -> document
    yaml_errors: dict[str, str] = field(default_factory=dict)
    checkov: dict[str, Any] = field(default_factory=dict)  # checkov JSON report (bicep framework)
    checkov_canary: str = ""  # the canary's path as checkov reports it

    def template(self, path: str) -> dict[str, Any]:
        assert path in self.templates, f"{path} was not parsed: {self.parse_errors.get(path, 'missing')}"
        return self.templates[path]


def _run_scan(python: Path, workdir: Path) -> InfraScan:
    canary = workdir / CANARY_NAME
    canary.write_text(CANARY_TEXT)
    infra_copy = workdir / "infra"
    shutil.copytree(INFRA, infra_copy)
    (infra_copy / CANARY_NAME).write_text(CANARY_TEXT)

    files = [str(p) for p in bicep_files()] + [str(canary)]
    yaml_files = [str(REPO / "azure.yaml")] if (REPO / "azure.yaml").exists() else []
    env = {**os.environ, **_TOOL_ENV}
    checkov_bin = python.parent / "checkov"
    with (workdir / "pycep.json").open("w") as pycep_out, (workdir / "checkov.json").open("w") as checkov_out:
        parse = subprocess.Popen(
            [str(python), str(TOOL), "--bicep", *files, "--yaml", *yaml_files],
            stdout=pycep_out, stderr=subprocess.PIPE, text=True, env=env,
        )
        scan = subprocess.Popen(
            [str(checkov_bin), "-d", str(infra_copy), "--framework", "bicep", "--output", "json",
             "--skip-download", "--compact"],
            stdout=checkov_out, stderr=subprocess.PIPE, text=True, env=env, cwd=workdir,
        )
        _, parse_err = parse.communicate(timeout=240)
        _, scan_err = scan.communicate(timeout=240)
    if parse.returncode != 0:
        pytest.fail(f"_infra_tool.py failed ({parse.returncode}):\n{parse_err[-4000:]}")
    # checkov exits 1 when a check fails: that is judged by the tests, from the JSON report.
    if scan.returncode not in (0, 1):
        pytest.fail(f"checkov failed ({scan.returncode}):\n{scan_err[-4000:]}")

    parsed = json.loads((workdir / "pycep.json").read_text())
    try:
        report = json.loads((workdir / "checkov.json").read_text())
    except json.JSONDecodeError:
        printed = (workdir / "checkov.json").read_text()[-2000:]
        pytest.fail(f"checkov printed no JSON report:\n{printed}\n{scan_err[-2000:]}")
    if isinstance(report, list):  # one entry per framework when several ran
        report = next((r for r in report if r.get("check_type") == "bicep"), {})

    result = InfraScan(checkov=report, checkov_canary=str(infra_copy / CANARY_NAME))
    for path, outcome in parsed["bicep"].items():
        if Path(path) == canary:
            result.canary_parse_error = None if outcome["ok"] else outcome["error"]
            continue
        key = rel(Path(path))
        if outcome["ok"]:
            result.templates[key] = outcome["template"]
        else:
            result.parse_errors[key] = outcome["error"]
    for path, outcome in parsed["yaml"].items():
        key = rel(Path(path))
        if outcome["ok"]:
            result.yaml_documents[key] = outcome["document"]
        else:
            result.yaml_errors[key] = outcome["error"]
    return result


@pytest.fixture(scope="session")
def infra_scan(tmp_path_factory: pytest.TempPathFactory) -> InfraScan:
    """pycep + PyYAML + checkov results for infra/ and azure.yaml, computed once per session."""
    python = ensure_infra_venv()
    return _run_scan(python, tmp_path_factory.mktemp("infra-scan"))


@dataclass(frozen=True)
class AppFunction:
    """One function of the app, as the Functions host indexes it (its function.json)."""

    name: str
    trigger: str  # binding type of the trigger, e.g. "eventGridTrigger"
    bindings: frozenset[str]  # every binding type, e.g. {"eventGridTrigger", "durableClient"}


def load_app_functions() -> dict[str, AppFunction]:
    """name -> function of ``function_app.py``, from a fresh app object.

    ``app.get_functions()`` may be called only once per app object (it records the names it built),
    and other tests may already hold ``function_app.app``: so the file is executed again under a
    unique module name, which builds a new app from the same blueprints.
    """
    spec = importlib.util.spec_from_file_location(
        f"function_app_infra_{uuid.uuid4().hex}", REPO / "function_app.py"
    )
    assert spec and spec.loader, "function_app.py cannot be loaded"
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    found: dict[str, AppFunction] = {}
    for fn in module.app.get_functions():
        bindings = json.loads(fn.get_function_json()).get("bindings", [])
        types = frozenset(str(b.get("type", "")) for b in bindings)
        triggers = [t for t in types if t.endswith("Trigger")]
        assert len(triggers) == 1, f"{fn.get_function_name()}: expected one trigger, found {triggers}"
        name = fn.get_function_name()
        assert name not in found, f"two functions named {name}"
        found[name] = AppFunction(name, triggers[0], types)
    return found


@pytest.fixture(scope="session")
def app_functions() -> dict[str, AppFunction]:
    """The functions of the real app (``function_app.py``), indexed once per session."""
    return load_app_functions()
