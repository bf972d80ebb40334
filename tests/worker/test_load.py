"""The worker stage: ``function_app.py`` is indexed and loaded by the worker runtime that Azure runs.

Each check runs ``python -m devhost.worker`` (or ``make run``'s command) in a fresh process: the
pinned ``azure-functions-runtime`` keeps one registry per process, exactly like a worker, and a
fresh process is also what Azure starts. Nothing here re-implements the worker's rules; a
refusal is the runtime's own ``FunctionLoadError``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from devhost.worker import FUNCTION_TABLE_PATH, README_END, README_START, render_readme_table
from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HITL_")}
    env.update({"PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}, **extra)
    return env


def _worker(*args: str, cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "devhost.worker", *args], cwd=cwd, env=_env(**env),
                          capture_output=True, text=True, timeout=120, check=False)


def test_every_function_loads_and_matches_the_checked_in_table(tmp_path: Path) -> None:
    done = _worker("table", HITL_STORAGE="sqlite", HITL_DATA_DIR=str(tmp_path))
    assert done.returncode == 0, done.stderr
    reported = json.loads(done.stdout)
    expected = json.loads(FUNCTION_TABLE_PATH.read_text(encoding="utf-8"))
    assert reported == expected, "the worker reports other functions than tests/worker/functions.json: " \
                                 "run `make functions-table` and review the difference"
    names = {row["name"] for row in reported}
    # what the rest of the product relies on, named so a silent loss cannot pass
    assert {"start_session", "post_response", "notify_reviewers", "track_deadlines", "sweep_outbox",
            "request_deadline", "send_reminder", "apply_timeout", "decide_page", "decide_submit"} <= names


def test_table_pins_routes_auth_levels_schedule_and_durable_names() -> None:
    table = {row["name"]: row for row in json.loads(FUNCTION_TABLE_PATH.read_text(encoding="utf-8"))}

    def trigger(name: str) -> dict[str, object]:
        return next(b for b in table[name]["bindings"] if b["type"] == table[name]["trigger"])

    assert trigger("start_session") == {"name": "req", "type": "httpTrigger", "direction": "in",
                                        "route": "workflows/{workflow}/sessions", "methods": ["POST"],
                                        "authLevel": "function"}
    assert trigger("decide_submit")["authLevel"] == "anonymous"
    assert trigger("sweep_outbox")["schedule"] == "0 */1 * * * *"
    assert trigger("request_deadline")["type"] == "orchestrationTrigger"
    assert {b["type"] for b in table["track_deadlines"]["bindings"]} == {"eventGridTrigger", "durableClient"}


def test_readme_table_of_functions_is_generated_from_the_table() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start, end = readme.index(README_START) + len(README_START), readme.index(README_END)
    table = json.loads(FUNCTION_TABLE_PATH.read_text(encoding="utf-8"))
    assert readme[start:end].strip() == render_readme_table(table).strip(), "run `make functions-table`"


BROKEN_APPS = {
    "union": ("func.EventGridEvent | func.CloudEvent", "event_grid_trigger(arg_name=\"event\")", "event"),
    "typing-union": ("typing.Union[func.EventGridEvent, func.CloudEvent]",
                     "event_grid_trigger(arg_name=\"event\")", "event"),
    "builtin-generic": ("dict[str, typing.Any]", "queue_trigger(arg_name=\"event\", queue_name=\"q\", "
                        "connection=\"AzureWebJobsStorage\")", "event"),
}


def _write_broken_app(folder: Path, annotation: str, decorator: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "function_app.py").write_text(textwrap.dedent(f'''
        import typing

        import azure.functions as func

        app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


        @app.route(route="ping", methods=["GET"])
        def ping(req: func.HttpRequest) -> func.HttpResponse:
            return func.HttpResponse("pong")


        @app.{decorator}
        def on_event(event: {annotation}) -> None:
            return None
    '''), encoding="utf-8")
    (folder / "host.json").write_text('{"version": "2.0"}', encoding="utf-8")


@pytest.mark.parametrize("kind", sorted(BROKEN_APPS))
def test_worker_stage_refuses_a_broken_annotation_naming_function_and_parameter(tmp_path: Path, kind: str) -> None:
    annotation, decorator, parameter = BROKEN_APPS[kind]
    _write_broken_app(tmp_path / "app", annotation, decorator)
    done = _worker("check", "--app-dir", str(tmp_path / "app"), cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "refuses this app" in done.stderr
    assert f"on_event, parameter `{parameter}`" in done.stderr
    assert "invalid non-type annotation" in done.stderr
    assert "fix: annotate the parameter with one class or a typing generic" in done.stderr


def test_worker_stage_accepts_the_same_app_once_fixed(tmp_path: Path) -> None:
    _write_broken_app(tmp_path / "app", "func.EventGridEvent", "event_grid_trigger(arg_name=\"event\")")
    done = _worker("check", "--app-dir", str(tmp_path / "app"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "the worker loads 2 functions: on_event, ping" in done.stdout


def test_make_run_refuses_what_azure_refuses(tmp_path: Path) -> None:
    """`make run` is `python -m devhost --app function_app:app`: it must stop, not serve."""
    _write_broken_app(tmp_path, "func.EventGridEvent | func.CloudEvent", "event_grid_trigger(arg_name=\"event\")")
    done = subprocess.run(
        [sys.executable, "-m", "devhost", "--app", "function_app:app", "--port", str(free_port()),
         "--data-dir", str(tmp_path / ".hitl")],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "on_event, parameter `event`" in done.stderr
    assert "fix: annotate the parameter" in done.stderr
    assert "devhost ready" not in done.stdout
