"""checkov finds nothing in infra/ beyond the justified rows of infra/checkov-baseline.md.

The same check by hand (needs checkov; exits 0 when only baselined checks fail)::

    .venv-infra/bin/checkov -d infra --framework bicep --skip-download --compact --skip-check \
        "$(grep -o '^| CKV[A-Z0-9_]*' infra/checkov-baseline.md | cut -c3- | sort -u | paste -sd, -)"

The test is stricter than ``--skip-check`` (which silences a check everywhere): it matches check,
file *and* resource, and rejects baseline rows that no longer match a finding.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .conftest import InfraScan

BASELINE = Path(__file__).resolve().parents[2] / "infra" / "checkov-baseline.md"
_ROW = re.compile(r"^\|\s*(CKV2?_[A-Z0-9_]+)\s*\|\s*([^|]+?)\s*\|\s*([^|]+?)\s*\|\s*(.*?)\s*\|\s*$")


@dataclass(frozen=True)
class Finding:
    check_id: str
    file: str  # relative to infra/, e.g. "modules/storage.bicep"
    resource: str  # checkov's resource address, e.g. "Microsoft.Storage/storageAccounts.storage"


def read_baseline(path: Path = BASELINE) -> dict[Finding, str]:
    """Rows ``| CHECK | file | resource | justification |`` -> justification."""
    rows: dict[Finding, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.startswith("| CKV"):
            continue
        match = _ROW.match(line)
        assert match, f"{path.name}:{number}: not a | check | file | resource | justification | row"
        finding = Finding(match[1], match[2].strip("`"), match[3].strip("`"))
        assert finding not in rows, f"{path.name}:{number}: duplicate row for {finding}"
        rows[finding] = match[4]
    return rows


def _findings(scan: InfraScan) -> dict[Finding, str]:
    failed = scan.checkov.get("results", {}).get("failed_checks", [])
    return {
        Finding(c["check_id"], c["file_path"].lstrip("/"), c["resource"]): c.get("check_name", "")
        for c in failed
    }


def test_checkov_scanned_the_bicep(infra_scan: InfraScan) -> None:
    summary = infra_scan.checkov.get("summary", {})
    assert summary.get("resource_count", 0) > 0, f"checkov saw no Bicep resources: {summary}"
    assert summary.get("passed", 0) > 0


def test_checkov_parse_errors_are_detected_and_only_the_canary(infra_scan: InfraScan) -> None:
    """checkov exits 0 on files it cannot parse, so its parsing_errors list is the signal."""
    errors = [Path(p).resolve() for p in infra_scan.checkov.get("results", {}).get("parsing_errors", [])]
    canary = Path(infra_scan.checkov_canary).resolve()
    assert canary in errors, "checkov did not report the broken canary file: parse errors would go unnoticed"
    others = [str(p) for p in errors if p != canary]
    assert others == [], f"checkov could not parse: {others}"


def test_no_failed_check_outside_the_baseline(infra_scan: InfraScan) -> None:
    baseline = read_baseline()
    new = {f: name for f, name in _findings(infra_scan).items() if f not in baseline}
    rows = "\n".join(f"| {f.check_id} | {f.file} | {f.resource} | {name} |" for f, name in sorted(new.items(), key=str))
    assert not new, f"checkov findings not in infra/checkov-baseline.md (fix them, or add a justified row):\n{rows}"


def test_baseline_has_no_stale_rows(infra_scan: InfraScan) -> None:
    stale = set(read_baseline()) - set(_findings(infra_scan))
    assert not stale, "baseline rows that match no finding any more (remove them):\n" + "\n".join(
        f"{f.check_id} {f.file} {f.resource}" for f in sorted(stale, key=str)
    )


def test_every_baseline_row_is_justified() -> None:
    rows = read_baseline()
    assert rows, "the baseline has no rows: is the table format intact?"
    for finding, why in rows.items():
        assert len(why) >= 20, f"{finding}: justification too short: {why!r}"
        assert (BASELINE.parent / finding.file).is_file(), f"{finding}: no such file infra/{finding.file}"
