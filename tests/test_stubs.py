"""``emailevents stubs``: a typed emit() that type checkers hold the registry's events to."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from emailevents import EmailEvents, OutboxSender
from emailevents.cli import main
from emailevents.demo import hooks
from emailevents.demo.run import REGISTRY
from emailevents.testing import memory_app

CORRECT = """\
from datetime import UTC, datetime

from emails import emit, user_invited

receipt = emit("user_invited", user="u", org="o", invitation="i")
print(receipt.event_id)
user_invited(user="u", org="o", invitation="i", session=None)
user_invited(user="u", org="o", invitation="i", send_at=datetime.now(UTC))
"""

# One file per mistake, each on line 3: every one must be an error.
MISTAKES = {
    "misspelt_key": 'emit("user_invitd", user="u", org="o", invitation="i")',
    "missing_entity": 'emit("user_invited", user="u", org="o")',
    "unexpected_entity": 'emit("user_invited", user="u", org="o", invitation="i", team="t")',
    "non_string_cuid": 'emit("user_invited", user=1, org="o", invitation="i")',
    "function_missing_entity": 'user_invited(user="u", org="o")',
    "send_at_not_a_datetime": 'user_invited(user="u", org="o", invitation="i", send_at="9:00")',
}


def stubs(*args: str) -> Any:
    return CliRunner().invoke(main, ["stubs", *args])


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder holding the demo's registry, with the typed module written beside it."""
    monkeypatch.chdir(tmp_path)
    shutil.copy(REGISTRY, tmp_path / "events.yaml")
    written = stubs("events.yaml", "-o", "emails.py")
    assert written.exit_code == 0, written.output
    assert written.output == "wrote emails.py: emit() typed for events.yaml\n"
    return tmp_path


def checker_errors(command: list[str], project: Path) -> dict[str, set[int]]:
    """File -> the lines a type checker reports an error on, over the sample files."""
    (project / "correct.py").write_text(CORRECT)
    for name, call in MISTAKES.items():
        (project / f"{name}.py").write_text(f"from emails import emit, user_invited\n\n{call}\n")
    files = ["emails.py", "correct.py", *(f"{name}.py" for name in MISTAKES)]
    done = subprocess.run(  # noqa: S603 - a checker of this environment, fixed arguments
        [*command, *files], cwd=project, capture_output=True, text=True, check=False
    )
    errors: dict[str, set[int]] = {}
    for match in re.finditer(
        r"^\s*(?:\S*/)?(\w+\.py):(\d+)(?::\d+)?:? -? ?error", done.stdout, re.MULTILINE
    ):
        errors.setdefault(match[1], set()).add(int(match[2]))
    assert done.returncode != 0, done.stdout + done.stderr
    return errors


@pytest.mark.slow
def test_mypy_strict_rejects_each_mistake_and_accepts_correct_calls(project: Path) -> None:
    # Only the written module and the samples: it is their types that must hold (emailevents,
    # SQLAlchemy and Celery are Any here; pyright, below, follows them). Seconds, not a minute.
    command = [sys.executable, "-m", "mypy", "--strict", "--follow-imports=skip"]
    command += ["--cache-dir", str(project / ".mypy")]
    errors = checker_errors(command, project)
    assert errors == {f"{name}.py": {3} for name in MISTAKES}


@pytest.mark.slow
def test_pyright_rejects_each_mistake_and_accepts_correct_calls(project: Path) -> None:
    pyright = shutil.which("pyright")
    assert pyright is not None, "pyright is in the dev extra: pip install -e '.[dev]'"
    errors = checker_errors([pyright], project)
    assert errors == {f"{name}.py": {3} for name in MISTAKES}


def test_check_passes_on_the_written_module_and_fails_after_a_registry_edit(
    project: Path,
) -> None:
    checked = stubs("events.yaml", "-o", "emails.py", "--check")
    assert checked.exit_code == 0, checked.output
    assert checked.output == "emails.py matches events.yaml\n"

    registry = project / "events.yaml"
    registry.write_text(registry.read_text().replace("invitation:", "invite:"))
    stale = stubs("events.yaml", "-o", "emails.py", "--check")
    assert stale.exit_code == 1
    assert stale.output == (
        "emails.py does not match events.yaml: run `emailevents stubs events.yaml -o emails.py`\n"
    )
    assert (project / "emails.py").read_text().count("invitation: str") == 2, "left untouched"


def test_check_fails_when_the_module_was_never_written(tmp_path: Path) -> None:
    result = stubs(str(REGISTRY), "-o", str(tmp_path / "emails.py"), "--check")
    assert result.exit_code == 1


@pytest.fixture
def default_app() -> EmailEvents:
    return EmailEvents(
        REGISTRY,
        celery=memory_app(),
        session_factory=lambda: None,  # type: ignore[arg-type, return-value] # nothing runs
        sender=OutboxSender(),
        context={"site_url": hooks.site_url},
    )


def test_the_typed_functions_emit_through_the_application(
    project: Path, default_app: EmailEvents, published: list[dict[str, Any]]
) -> None:
    namespace: dict[str, Any] = {}
    exec((project / "emails.py").read_text(), namespace)  # noqa: S102 - the module just written
    first = namespace["user_invited"](user="u-1", org="o-1", invitation="i-1")
    second = namespace["emit"]("model_comment_added", user="u-2", org="o-1", comment="c-9")
    assert [message["headers"]["id"] for message in published] == [
        first.event_id,
        second.event_id,
    ]
    assert [message["task"] for message in published] == [
        default_app.event("user_invited").task_name,
        default_app.event("model_comment_added").task_name,
    ]
    assert published[1]["body"][1] == {"user": "u-2", "org": "o-1", "comment": "c-9"}


def test_a_registry_of_one_event_has_emit_typed_without_overloads(tmp_path: Path) -> None:
    from emailevents import load_registry  # noqa: PLC0415
    from emailevents.stubs import render_stubs  # noqa: PLC0415

    registry = load_registry(REGISTRY)
    one = dataclasses.replace(registry, events={"user_invited": registry.events["user_invited"]})
    text = render_stubs(one, source="events.yaml", target="emails.py")
    assert "@overload" not in text
    assert 'event_key: Literal["user_invited"],' in text
    compile(text, "emails.py", "exec")
