"""What leaves the repository: the Functions deployment package and the wheel.

Azure runs ``function_app.py`` with ``hitl_core/`` and ``workflows/`` (plus ``host.json`` and
``requirements.txt``). The local Functions stand-in host (``devhost/``), the tests, benchmarks,
examples, tools and ``infra/`` must never be deployed. ``azd deploy`` (like ``func azure
functionapp publish``) leaves out what ``.funcignore`` lists, in .gitignore syntax; pathspec's
``GitIgnoreSpec`` evaluates that syntax here against the real files of the working tree.

The wheel (setuptools package discovery in pyproject.toml) must hold ``hitl_core`` and nothing of
the development-only trees; it is built from a copy of the working tree, so the build leaves no
``build/`` or ``*.egg-info`` behind in the repository.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from functools import cache
from pathlib import Path, PurePosixPath

import pathspec
import pytest

REPO = Path(__file__).resolve().parents[1]

# Development-only trees: never part of the deployment package or the wheel.
LOCAL_ONLY = ("devhost", "tests", "bench", "tools", "examples", "infra")
# What the Functions host needs at the root of the deployment package.
DEPLOYED_FILES = ("function_app.py", "host.json", "requirements.txt")
DEPLOYED_PACKAGES = ("hitl_core", "workflows")
# Local state that must not be uploaded either (paths need not exist).
LOCAL_STATE = (
    ".venv/bin/python",
    ".venv-infra/bin/checkov",
    ".git/HEAD",
    "local.settings.json",
    "hitl_core/__pycache__/settings.cpython-313.pyc",
    "hitl_core.egg-info/PKG-INFO",
    ".hitl/checkpoints/x.json",
)
# Not copied into the wheel build's source tree: environments, caches and earlier build output.
_NOT_BUILD_SOURCE = shutil.ignore_patterns(
    ".git", ".venv*", "node_modules", "__pycache__", "*.egg-info", "build", "dist",
    ".mypy_cache", ".pytest_cache", ".ruff_cache", ".hypothesis", ".hitl",
)


@cache
def funcignore() -> pathspec.GitIgnoreSpec:
    return pathspec.GitIgnoreSpec.from_lines((REPO / ".funcignore").read_text(encoding="utf-8").splitlines())


def excluded(path: str) -> bool:
    """Whether .funcignore keeps ``path`` (relative, POSIX; a trailing / marks a directory) out."""
    return funcignore().match_file(path)


def _files_under(top: Path) -> Iterator[str]:
    for path in sorted(top.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            yield path.relative_to(REPO).as_posix()


@cache
def deployment_package() -> frozenset[str]:
    """The working tree's files that a deployment uploads (excluded directories are not entered)."""
    kept: set[str] = set()
    for root, dirs, files in os.walk(REPO):
        base = PurePosixPath(Path(root).relative_to(REPO).as_posix())
        dirs[:] = [d for d in dirs if not excluded(f"{(base / d).as_posix()}/")]
        kept.update(p for p in ((base / f).as_posix() for f in files) if not excluded(p))
    return frozenset(kept)


def test_funcignore_is_parsed_into_patterns() -> None:
    assert len(funcignore().patterns) >= len(LOCAL_ONLY), "no patterns read from .funcignore"


@pytest.mark.parametrize("tree", LOCAL_ONLY)
def test_local_only_tree_is_not_deployed(tree: str) -> None:
    assert excluded(f"{tree}/"), f".funcignore does not exclude {tree}/"
    assert excluded(f"{tree}/__init__.py")
    leaked = [p for p in _files_under(REPO / tree) if not excluded(p)]
    assert not leaked, f".funcignore lets files of {tree}/ into the deployment: {leaked}"
    assert not any(p.split("/")[0] == tree for p in deployment_package())


@pytest.mark.parametrize("path", LOCAL_STATE)
def test_local_state_is_not_deployed(path: str) -> None:
    assert excluded(path), f".funcignore lets {path} into the deployment"


@pytest.mark.parametrize("name", DEPLOYED_FILES)
def test_host_files_are_deployed(name: str) -> None:
    assert (REPO / name).is_file(), f"{name} is missing"
    assert not excluded(name), f".funcignore excludes {name}"
    assert name in deployment_package()


@pytest.mark.parametrize("package", DEPLOYED_PACKAGES)
def test_app_packages_are_deployed_whole(package: str) -> None:
    files = list(_files_under(REPO / package))
    assert f"{package}/__init__.py" in files, f"{package}/ is not a package"
    assert not excluded(f"{package}/")
    dropped = [p for p in files if p not in deployment_package()]
    assert not dropped, f".funcignore drops files of {package}/ from the deployment: {dropped}"


def _imported_top_levels(source: str, filename: str) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(source, filename=filename)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_deployed_code_imports_only_deployed_local_modules() -> None:
    """An import of devhost (or tests, bench, ...) from deployed code would fail in Azure."""
    local = {p.name for p in REPO.iterdir() if p.is_dir() and any(p.glob("*.py"))}
    local |= {p.stem for p in REPO.glob("*.py")}
    package = deployment_package()
    deployed = {PurePosixPath(p).parts[0].removesuffix(".py") for p in package if p.endswith(".py")}
    assert {"function_app", *DEPLOYED_PACKAGES} <= deployed
    missing: dict[str, set[str]] = {}
    for path in sorted(p for p in package if p.endswith(".py")):
        imported = _imported_top_levels((REPO / path).read_text(encoding="utf-8"), path)
        absent = (imported & local) - deployed
        if absent:
            missing[path] = absent
    assert not missing, f"deployed modules import local modules that are not deployed: {missing}"


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Entry names of the project's wheel, built from a copy of the working tree."""
    work = tmp_path_factory.mktemp("wheel")
    source, out = work / "src", work / "dist"
    shutil.copytree(REPO, source, ignore=_NOT_BUILD_SOURCE)
    try:
        from uv import find_uv_bin
    except ImportError:  # uv is a dev dependency; pip builds the same wheel, only slower
        commands = [[sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(source)]]
    else:
        build = [find_uv_bin(), "build", "--wheel", "-q", "--out-dir", str(out), str(source)]
        # From uv's cache first (fast, no network); the index only when the cache lacks setuptools.
        commands = [[*build, "--offline"], build]
    errors = []
    for command in commands:
        result = subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)
        if result.returncode == 0:
            break
        errors.append(f"{' '.join(command)}:\n{result.stderr[-2000:]}")
    else:
        pytest.fail("could not build the wheel:\n" + "\n".join(errors))
    wheels = sorted(out.glob("*.whl"))
    assert len(wheels) == 1, f"expected one wheel, found {[w.name for w in wheels]}"
    with zipfile.ZipFile(wheels[0]) as archive:
        return archive.namelist()


def test_wheel_holds_every_hitl_core_module(wheel_names: list[str]) -> None:
    modules = [p for p in _files_under(REPO / "hitl_core") if p.endswith(".py")]
    assert "hitl_core/__init__.py" in modules
    missing = sorted(set(modules) - set(wheel_names))
    assert not missing, f"hitl_core modules missing from the wheel: {missing}"


def test_wheel_holds_no_local_only_code(wheel_names: list[str]) -> None:
    tops = {name.split("/")[0] for name in wheel_names if ".dist-info/" not in name}
    assert "hitl_core" in tops
    assert not tops & set(LOCAL_ONLY), f"development-only trees in the wheel: {tops & set(LOCAL_ONLY)}"
    # Anywhere in the tree, too: the devhost used to live in hitl_core/devhost.
    nested = [n for n in wheel_names if {"devhost", "tests"} & set(n.split("/")[:-1])]
    assert not nested, f"devhost or tests files in the wheel: {nested}"
