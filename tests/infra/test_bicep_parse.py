"""Every Bicep file parses with pycep-parser (no Bicep compiler is available offline)."""

from __future__ import annotations

from pathlib import PurePosixPath

import pytest

from .conftest import INFRA, REPO, InfraScan, bicep_files, rel


def test_infra_has_bicep_files() -> None:
    assert (INFRA / "main.bicep").is_file()
    assert len(bicep_files()) >= 2


@pytest.mark.parametrize("path", [rel(p) for p in bicep_files()])
def test_bicep_file_parses(infra_scan: InfraScan, path: str) -> None:
    assert path not in infra_scan.parse_errors, f"{path} does not parse: {infra_scan.parse_errors[path]}"
    assert path in infra_scan.templates


def test_parse_errors_are_detected(infra_scan: InfraScan) -> None:
    """The canary (an unclosed resource body) must fail, or the check above proves nothing."""
    assert infra_scan.canary_parse_error, "pycep accepted a broken Bicep file"


def test_every_module_reference_resolves_and_every_module_is_used(infra_scan: InfraScan) -> None:
    referenced: set[str] = set()
    for path, template in infra_scan.templates.items():
        for name, module in (template.get("modules") or {}).items():
            assert module["type"] == "local", f"{path}: module {name} is not a local file"
            target = (REPO / PurePosixPath(path).parent / module["detail"]["path"]).resolve()
            assert target.is_file(), f"{path}: module {name} points to a missing file {target}"
            referenced.add(rel(target))
    modules = {p for p in infra_scan.templates if p != "infra/main.bicep"}
    assert modules - referenced == set(), "Bicep files that main.bicep (or a module) never uses"
