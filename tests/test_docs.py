"""The code in ``docs/*.md`` runs: one test per document, its blocks in order.

What happens to a fenced block depends on its fence and on an HTML comment on the line(s) just
before it (invisible when the Markdown is rendered):

- ```` ```python ````: run. All the Python blocks of one document run in order in one namespace,
  so a block builds on the ones before it. What a block prints is compared with the next block
  when that one is marked ``<!-- output -->``.
- ```` ```python title="myapp/hooks.py" ```` (any fence with a ``title``): a file of the
  example application, written to that path in the document's project directory before any
  block runs. That directory is the working directory and is importable, as it is for
  ``celery -A`` and ``emailevents``.
- ```` ```yaml title="events.yaml" ```` or a ``yaml`` block after ``<!-- registry -->``: a
  registry (a ``yaml`` block with another title is a file, as above), written to its title
  (``events.yaml`` without one) and loaded with
  ``load_registry``; it must load. After ``<!-- registry: rejects -->`` it must not, and the next
  block, marked ``<!-- output -->``, is the error exactly as printed. After
  ``<!-- registry: fragment -->`` it is an edit: merged into the document's last registry file,
  which must still load.
- ```` ```console ````: each ``$ emailevents ...`` line runs through click's ``CliRunner`` and each
  ``$ pytest ...`` line in a subprocess; the lines up to the next ``$`` are their output. Run
  times (``in 0.8s``), local port numbers (``127.0.0.1:38517``), timestamps
  (``2024-06-03 09:12:44``, ``2024-06-03T09:12:44.123456+00:00``) and UUIDs (event ids) are not
  compared: the documents show real ones, a run makes new ones.
- ``<!-- no-test -->``: shown, not run (``pip install``, a worker that needs a broker). Blocks in
  other languages (``text``, ``sql``, ``json``) are shown, not run, unless marked as output.

A document whose first line is ``<!-- step-by-step -->`` (the quickstart) is run the way a
reader follows it instead, in a new, empty folder, with none of the runner's own environment
(no ``POSTMARK_*``, ``CELERY_BROKER_URL`` or ``DATABASE_URL``); nothing runs in this process:

- a block with a ``title`` is a file to write, written when the reading reaches it (a later
  block with the same title replaces the file, as the reader's editor would);
- ```` ```console ```` (or ``bash``, ``shell``, ``sh``): each ``$ `` line is a command, run by
  ``/bin/sh`` as a process of its own; the lines up to the next ``$`` are what it prints
  (stdout and stderr, as a terminal shows them), compared as above. It must exit 0. A UUID
  in a command that an earlier command printed is replaced by what that command really printed
  (the reader copies it from the screen);
- after ``<!-- eventually -->``, what the commands print depends on a worker in the
  background: they are run again until it matches, for up to 20 seconds;
- after ``<!-- background -->``, each command is a long-running process (a worker, the local
  Postmark) that the reader starts in another terminal: it is started in the background, and
  the lines shown must appear in what it prints, in order (``...`` in a line stands for any
  text; a ``...`` line is left out) before the reading goes on. A background command for the
  same program as a running one replaces it (Ctrl-C, then the new command). Every background
  process is killed when the test ends, and must not have printed a traceback;
- ``$ export NAME=value ...`` sets those variables for the commands that follow, as in the
  reader's shell (the other commands' shells are gone when they exit);
- the local ports the document uses, 9025 to 9029 (the local Postmark's is 9025), are each
  replaced in commands and files by a free one, so that a test run never depends on them;
- other Python or YAML blocks must be files (a title) or ``<!-- no-test -->``.

Set ``EMAILEVENTS_UPDATE_DOCS=1`` to rewrite the ``<!-- output -->`` blocks (and the console
blocks of step-by-step documents) with what the code prints now (after a deliberate change of
a message), then review the diff.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

import emailevents
from emailevents import RegistryError, load_registry
from emailevents.cli import main as cli

DOCS = Path(__file__).parent.parent / "docs"
UPDATE = os.environ.get("EMAILEVENTS_UPDATE_DOCS") == "1"

_FENCE = re.compile(r"^(?P<fence>`{3,})(?P<lang>[\w+-]*)(?P<info>.*)$")
_TITLE = re.compile(r"""\btitle=(?P<quote>["']?)(?P<title>[^"'\s]+)(?P=quote)""")
_MARKER = re.compile(r"^<!--\s*(?P<name>[\w-]+)(?:\s*:\s*(?P<value>[^>]*?))?\s*-->$")
_DURATION = re.compile(r"\bin \d+(?:\.\d+)? ?s\b")
_LOCAL_PORT = re.compile(r"\b(127\.0\.0\.1|localhost):\d+")
_TIMESTAMP = re.compile(r"\b\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:[+-]\d\d:\d\d|Z)?")
_UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")
_RUNNABLE = frozenset({"python", "yaml", "console", "bash", "shell", "sh"})
_MARKERS = {
    "no-test": {""},
    "output": {""},
    "registry": {"", "rejects", "fragment"},
    "background": {""},
    "eventually": {""},
}
_CONSOLE = frozenset({"console", "bash", "shell", "sh"})
_STEP_BY_STEP = "<!-- step-by-step -->"
_DOC_PORT = re.compile(r"\b902[5-9]\b")
_ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
# What a reader's shell would not have: the settings of the environment running the tests.
_NOT_THE_READERS = frozenset(
    {
        "POSTMARK_SERVER_TOKEN",
        "POSTMARK_API_URL",
        "CELERY_BROKER_URL",
        "DATABASE_URL",
        "EMAILEVENTS_APP",
        "EMAILEVENTS_DEMO_DIR",
        "NO_COLOR",
    }
)
EVENTUALLY = 20.0
"""Seconds an ``<!-- eventually -->`` block is given to print what the document shows."""
BACKGROUND_READY = 30.0
"""Seconds a background process is given to print the lines the document shows."""


@dataclass
class Block:
    """One fenced block of a document."""

    lang: str
    source: str
    line: int
    """1-based line of the block's first source line in the Markdown file."""
    title: str | None = None
    marker: str | None = None
    marker_value: str = ""
    end: int = 0
    """1-based line of the closing fence."""

    def where(self, doc: Path) -> str:
        return f"{doc.name}:{self.line}"


@dataclass
class Project:
    """The document's example application: a directory, a namespace, its registries."""

    root: Path
    doc: Path
    namespace: dict[str, Any] = field(default_factory=dict)
    registry: Path | None = None
    updates: list[tuple[Block, str]] = field(default_factory=list)


def parse_blocks(text: str) -> list[Block]:
    """The fenced blocks of a Markdown text, each with its title and its marker comment."""
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if match is None:
            i += 1
            continue
        fence, start = match["fence"], i
        end = next((j for j in range(i + 1, len(lines)) if lines[j].rstrip() == fence), len(lines))
        title = _TITLE.search(match["info"])
        block = Block(
            lang=match["lang"].lower(),
            source="\n".join(lines[start + 1 : end]) + "\n",
            line=start + 2,
            title=title["title"] if title else None,
            end=end + 1,
        )
        previous = start - 1
        while previous >= 0 and not lines[previous].strip():
            previous -= 1
        marker = _MARKER.match(lines[previous].strip()) if previous >= 0 else None
        if marker is not None:
            block.marker, block.marker_value = marker["name"], (marker["value"] or "").strip()
        blocks.append(block)
        i = end + 1
    return blocks


def documents() -> list[Any]:
    """Each document; the quickstart, run step by step as processes, is among the slow tests."""
    return [
        pytest.param(path, marks=pytest.mark.slow) if path.name == "quickstart.md" else path
        for path in sorted(DOCS.glob("*.md"))
    ]


@pytest.fixture
def project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[Project]:
    """A fresh, importable working directory; the modules imported from it are forgotten after."""
    root = tmp_path / "project"
    root.mkdir()
    monkeypatch.chdir(root)
    monkeypatch.syspath_prepend(str(root))
    # The documents' EmailEvents become the default instance of `emit()`; restore the previous.
    monkeypatch.setattr("emailevents.engine._default", emailevents.engine._default)
    yield Project(root=root, doc=request.param)
    for name, module in list(sys.modules.items()):
        places = [getattr(module, "__file__", None) or "", *getattr(module, "__path__", ())]
        if any(str(place).startswith(str(root)) for place in places):
            del sys.modules[name]


@pytest.mark.parametrize("project", documents(), ids=lambda p: p.name, indirect=True)
def test_document_examples_run(project: Project) -> None:
    text = project.doc.read_text(encoding="utf-8")
    blocks = parse_blocks(text)
    assert blocks, f"{project.doc.name} has no code blocks"
    for block in blocks:
        known = block.marker is None or block.marker_value in _MARKERS.get(block.marker, ())
        assert known, f"{block.where(project.doc)}: unknown marker {block.marker!r}"
    if text.startswith(_STEP_BY_STEP):
        run_steps(project, blocks)
        return
    for block in blocks:
        assert block.marker not in {"background", "eventually"}, (
            f"{block.where(project.doc)}: <!-- {block.marker} --> is for step-by-step documents"
        )
    # The application's files first: a registry near the top may name a module shown below it.
    for block in blocks:
        if block.title is not None and not is_registry(block) and block.marker != "no-test":
            write_file(project, block)
    i = 0
    while i < len(blocks):
        block = blocks[i]
        following = blocks[i + 1] if i + 1 < len(blocks) else None
        expected = following if following is not None and following.marker == "output" else None
        if block.marker == "output":
            pytest.fail(f"{block.where(project.doc)}: an output block follows nothing that runs")
        if block.marker != "no-test":
            run_block(project, block, expected)
        i += 2 if expected is not None else 1
    if project.updates:
        rewrite_outputs(project.doc, project.updates)


def run_block(project: Project, block: Block, expected: Block | None) -> None:
    where = block.where(project.doc)
    if block.title is not None and not is_registry(block):
        if block.lang == "python":  # written already; at least it must be Python
            compile(block.source, block.title, "exec")
        return
    if block.lang == "python":
        output = run_python(project, block)
    elif is_registry(block):
        output = load_yaml_registry(project, block)
    elif block.lang in ("console", "bash", "shell", "sh"):
        run_console(project, block)
        return
    elif block.lang in _RUNNABLE:
        pytest.fail(
            f"{where}: a {block.lang} block that is neither a registry nor marked "
            "<!-- no-test -->; say what it is"
        )
    else:
        assert expected is None, f"{where}: a {block.lang} block has an output block"
        return
    if expected is not None:
        compare(project, expected, output, what=where)
    else:
        assert not output.strip(), f"{where} printed what the document does not show:\n{output}"


def is_registry(block: Block) -> bool:
    """A ``yaml`` block titled ``events.yaml`` (or ``.../events.yaml``), or marked registry."""
    titled = block.title is not None and Path(block.title).name == "events.yaml"
    return block.lang == "yaml" and (titled or block.marker == "registry")


def write_file(project: Project, block: Block) -> Path:
    assert block.title is not None
    path = project.root / block.title
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(block.source, encoding="utf-8")
    return path


def run_python(project: Project, block: Block) -> str:
    # Blank lines first, so that tracebacks give the line numbers of the Markdown file.
    code = compile("\n" * (block.line - 1) + block.source, str(project.doc), "exec")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        exec(code, project.namespace)  # noqa: S102 - running the documentation is the point
    return stdout.getvalue()


def load_yaml_registry(project: Project, block: Block) -> str:
    """Write and load a registry; return the loader's error for a registry that must fail."""
    where = block.where(project.doc)
    if block.marker_value == "fragment":
        assert project.registry is not None, f"{where}: a fragment needs a registry before it"
        merged = merge(yaml.safe_load(project.registry.read_text()), yaml.safe_load(block.source))
        project.registry.write_text(yaml.safe_dump(merged, sort_keys=False))
        load_registry(project.registry.relative_to(project.root))
        return ""
    path = project.root / (block.title or "events.yaml")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(block.source, encoding="utf-8")
    name = str(path.relative_to(project.root))
    if block.marker_value == "rejects":
        with pytest.raises(RegistryError) as raised:
            load_registry(name)
        return f"{raised.value}\n"
    try:
        load_registry(name)
    except RegistryError as exc:
        pytest.fail(f"{where}: the registry does not load:\n{exc}")
    project.registry = path
    return ""


def merge(base: Any, change: Any) -> Any:
    """``change`` laid over ``base``: mappings merge key by key, anything else replaces."""
    if isinstance(base, dict) and isinstance(change, dict):
        return {**base, **{key: merge(base.get(key), value) for key, value in change.items()}}
    return change


def console_commands(project: Project, block: Block) -> list[tuple[str, list[str]]]:
    """Each ``$ command`` of a console block, with the lines shown after it."""
    where = block.where(project.doc)
    commands: list[tuple[str, list[str]]] = []
    for line in block.source.splitlines():
        if line.startswith("$ "):
            commands.append((line[2:], []))
        else:
            assert commands, f"{where}: console output before any '$ command'"
            commands[-1][1].append(line)
    assert commands, f"{where}: a console block without a '$ command'"
    return commands


def run_console(project: Project, block: Block) -> None:
    where = block.where(project.doc)
    commands = console_commands(project, block)
    printed: list[str] = []
    for command, expected in commands:
        output = run_command(project, block, command)
        printed += [f"$ {command}", *output.rstrip("\n").splitlines()]
        if not UPDATE:
            assert _normalise(output) == _normalise("\n".join(expected)), (
                f"{where}: '{command}' printed:\n{output}"
            )
    if UPDATE and _normalise("\n".join(printed)) != _normalise(block.source):
        project.updates.append((block, "\n".join(printed)))


def run_command(project: Project, block: Block, command: str) -> str:
    """Run one console command of a block; return what it printed."""
    where = block.where(project.doc)
    argv = shlex.split(command)
    if argv[0] == "emailevents":
        result = CliRunner().invoke(cli, argv[1:], catch_exceptions=False)
        output, code = result.output, result.exit_code
    elif argv[0] == "pytest" or argv[:3] == ["python", "-m", "pytest"]:
        args = argv[1:] if argv[0] == "pytest" else argv[3:]
        completed = subprocess.run(  # noqa: S603 - the interpreter running these tests
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
            cwd=project.root,
            capture_output=True,
            text=True,
            check=False,
            # A reader's shell: none of the outer pytest's own variables (xdist's among them).
            env={
                **{k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")},
                "COLUMNS": "80",
            },
            timeout=300,
        )
        output, code = completed.stdout + completed.stderr, completed.returncode
    else:
        pytest.fail(
            f"{where}: cannot run '{command}' here; mark the block <!-- no-test --> "
            "if it needs a service"
        )
    assert code == 0, f"{where}: '{command}' exited with {code}:\n{output}"
    return output


# -- step-by-step documents -----------------------------------------------------------------------


@dataclass
class Background:
    """A long-running command of the document, and everything it printed so far."""

    command: str
    program: str
    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    def output(self) -> str:
        return "\n".join(self.lines)


@dataclass
class Reader:
    """The reader's shell: a folder, an environment, the processes left running."""

    project: Project
    env: dict[str, str]
    ports: dict[str, int] = field(default_factory=dict)
    """The document's local ports (9025 to 9029) -> free ones."""
    uuids: dict[str, str] = field(default_factory=dict)
    """UUIDs the document shows -> those the commands really printed."""
    background: list[Background] = field(default_factory=list)

    def typed(self, command: str) -> str:
        """The command as the reader types it: UUIDs copied from the screen, the free port."""
        command = _UUID.sub(lambda m: self.uuids.get(m[0], m[0]), command)
        return self.local(command)

    def local(self, text: str) -> str:
        """``text`` with the document's local ports replaced by free ones."""
        return _DOC_PORT.sub(lambda m: str(self.ports.setdefault(m[0], _free_port())), text)

    def shown(self, text: str) -> str:
        """``text`` with the free ports put back as the document shows them."""
        for documented, port in self.ports.items():
            text = text.replace(f":{port}", f":{documented}")
        return text

    def run(self, command: str) -> tuple[int, str]:
        words = shlex.split(self.typed(command))
        if words[:1] == ["export"]:  # for the commands that follow, as in the reader's shell
            for word in words[1:]:
                name, _, value = word.partition("=")
                self.env[name] = value
            return 0, ""
        completed = subprocess.run(  # noqa: S602 - the document's command, as a shell runs it
            self.typed(command),
            shell=True,
            cwd=self.project.root,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
            timeout=120,
        )
        return completed.returncode, completed.stdout

    def start(self, command: str) -> Background:
        program = _program(command)
        for running in [b for b in self.background if b.program == program]:
            _kill(running)  # the reader's Ctrl-C in that terminal
            self.background.remove(running)
        process = subprocess.Popen(  # noqa: S602 - the document's command, as a shell runs it
            self.typed(command),
            shell=True,
            cwd=self.project.root,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group: killed with its children
        )
        started = Background(command, program, process)
        started.reader = threading.Thread(target=_read_lines, args=(started,), daemon=True)
        started.reader.start()
        self.background.append(started)
        return started

    def learn(self, shown: str, printed: str) -> None:
        """Pair the UUIDs the document shows with those really printed, in order."""
        documented, real = _UUID.findall(shown), _UUID.findall(printed)
        if len(documented) == len(real):
            self.uuids.update(zip(documented, real, strict=True))

    def stop_all(self) -> None:
        for running in self.background:
            _kill(running)


def _program(command: str) -> str:
    words = [w for w in shlex.split(command) if not _ENV_ASSIGNMENT.match(w)]
    return words[0] if words else command


def _read_lines(running: Background) -> None:
    assert running.process.stdout is not None
    for line in running.process.stdout:
        running.lines.append(line.rstrip("\n"))


def _kill(running: Background) -> None:
    """Kill the process and its children (a worker's pool); a Celery warm shutdown takes
    seconds, and nothing is left to finish once the document moved on."""
    if running.process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(running.process.pid, signal.SIGKILL)
    running.process.wait(10)
    if running.reader is not None:
        running.reader.join(5)
    if running.process.stdout is not None:
        running.process.stdout.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _readers_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _NOT_THE_READERS}
    # `python`, `celery` and `emailevents` are this interpreter's, as in the reader's virtualenv.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    # A terminal shows each line as it is printed; a pipe would hold them in Python's buffer.
    env["PYTHONUNBUFFERED"] = "1"
    env["COLUMNS"] = "80"
    return env


def run_steps(project: Project, blocks: list[Block]) -> None:
    """Follow a step-by-step document as its reader does: files written, commands run."""
    reader = Reader(project, _readers_env())
    try:
        for block in blocks:
            where = block.where(project.doc)
            if block.marker == "no-test":
                continue
            assert block.marker != "output", (
                f"{where}: in a step-by-step document, output goes in the console block"
            )
            if block.title is not None:
                path = project.root / block.title
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(reader.local(block.source), encoding="utf-8")
                if block.lang == "python":
                    compile(block.source, block.title, "exec")
            elif block.lang in _CONSOLE and block.marker == "background":
                for command, shown in console_commands(project, block):
                    wait_for(reader, reader.start(command), shown, where)
            elif block.lang in _CONSOLE:
                run_step(reader, block)
            else:
                assert block.lang not in _RUNNABLE, (
                    f"{where}: a {block.lang} block in a step-by-step document is a file to write "
                    '(give it a title="path") or a command (a console block); or mark it '
                    "<!-- no-test -->"
                )
    finally:
        reader.stop_all()
    for running in reader.background:
        assert "Traceback (most recent call last)" not in running.output(), (
            f"'{running.command}' printed a traceback:\n{running.output()}"
        )
    if project.updates:
        rewrite_outputs(project.doc, project.updates)


def run_step(reader: Reader, block: Block) -> None:
    where = block.where(reader.project.doc)
    deadline = time.monotonic() + (EVENTUALLY if block.marker == "eventually" else 0)
    printed: list[str] = []
    for command, shown in console_commands(reader.project, block):
        expected = "\n".join(shown)
        while True:
            code, output = reader.run(command)
            matches = code == 0 and _normalise(output) == _normalise(expected)
            if matches or time.monotonic() >= deadline:
                break
            time.sleep(0.2)
        if UPDATE:
            printed += [f"$ {reader.typed(command)}", *output.rstrip("\n").splitlines()]
        else:
            assert code == 0, f"{where}: '{command}' exited with {code}:\n{output}"
            assert matches, f"{where}: '{command}' printed:\n{output}"
        reader.learn(expected, output)
    if UPDATE:
        text = reader.shown("\n".join(printed))
        if text != block.source.rstrip("\n"):
            reader.project.updates.append((block, text))


def wait_for(reader: Reader, running: Background, shown: list[str], where: str) -> None:
    """Wait until a background process printed the lines shown, in order."""
    wanted = [line for line in shown if line.strip() not in {"", "..."}]
    patterns = [_pattern(line) for line in wanted]
    deadline = time.monotonic() + BACKGROUND_READY
    while True:
        found = 0
        for line in list(running.lines):
            if found < len(patterns) and patterns[found].fullmatch(_normalise(line)):
                found += 1
        if found == len(patterns):
            reader.learn("\n".join(wanted), running.output())
            return
        exited = running.process.poll() is not None
        if exited or time.monotonic() >= deadline:
            what = "exited" if exited else f"did not print it in {BACKGROUND_READY:.0f} s"
            pytest.fail(
                f"{where}: '{running.command}' {what}; waited for {wanted[found]!r} "
                f"after:\n{running.output()}"
            )
        time.sleep(0.05)


def _pattern(line: str) -> re.Pattern[str]:
    """A line a background process must print; ``...`` in it stands for any text."""
    parts = _normalise(line).split("...")
    return re.compile(".*".join(re.escape(part) for part in parts))


def compare(project: Project, expected: Block, actual: str, *, what: str) -> None:
    if UPDATE:
        if _normalise(actual) != _normalise(expected.source):
            project.updates.append((expected, actual))
        return
    assert _normalise(actual) == _normalise(expected.source), (
        f"{what} printed something else than the output block at "
        f"{expected.where(project.doc)}:\n{actual}"
    )


def _normalise(text: str) -> str:
    lines = []
    for line in text.splitlines():
        plain = _LOCAL_PORT.sub(r"\1:<port>", _DURATION.sub("in <time>", line.rstrip()))
        lines.append(_UUID.sub("<uuid>", _TIMESTAMP.sub("<timestamp>", plain)))
    return "\n".join(lines).strip("\n")


def rewrite_outputs(doc: Path, updates: list[tuple[Block, str]]) -> None:
    """Replace each output block's body with what was printed (EMAILEVENTS_UPDATE_DOCS=1)."""
    lines = doc.read_text(encoding="utf-8").splitlines(keepends=True)
    for block, actual in sorted(updates, key=lambda u: u[0].line, reverse=True):
        body = [line.rstrip() + "\n" for line in actual.strip("\n").splitlines()]
        lines[block.line - 1 : block.end - 1] = body
    doc.write_text("".join(lines), encoding="utf-8")


def test_block_parser_reads_titles_markers_and_lines() -> None:
    text = (
        "# Title\n"
        "\n"
        "<!-- registry: rejects -->\n"
        "\n"
        '```yaml title="events.yaml"\n'
        "version: 1\n"
        "```\n"
        "<!-- output -->\n"
        "```text\n"
        "1 problem\n"
        "```\n"
        "````python\n"
        "```\n"
        "````\n"
    )
    first, second, third = parse_blocks(text)
    assert (first.lang, first.title, first.marker, first.marker_value) == (
        "yaml",
        "events.yaml",
        "registry",
        "rejects",
    )
    assert (first.line, first.end, first.source) == (6, 7, "version: 1\n")
    assert (second.lang, second.marker, second.source) == ("text", "output", "1 problem\n")
    assert (third.lang, third.source) == ("python", "```\n")


# -- the step-by-step runner itself ----------------------------------------------------------------


runner_only = pytest.mark.skipif(UPDATE, reason="EMAILEVENTS_UPDATE_DOCS rewrites documents")


def steps(tmp_path: Path, text: str) -> Project:
    """Run ``text`` as a step-by-step document in a fresh folder under ``tmp_path``."""
    root = tmp_path / "reader"
    root.mkdir(parents=True)
    project = Project(root=root, doc=tmp_path / "doc.md")
    run_steps(project, parse_blocks(_STEP_BY_STEP + "\n" + text))
    return project


@runner_only
def test_step_by_step_files_are_written_and_commands_compared_with_what_they_print(
    tmp_path: Path,
) -> None:
    doc = '```text title="notes/hello.txt"\nhello 2024-06-03 09:12:44\n```\n'
    doc += "```console\n$ cat notes/hello.txt\nhello 2030-01-01 00:00:00\n```\n"
    steps(tmp_path, doc)  # timestamps are not compared
    with pytest.raises(AssertionError, match="printed"):
        steps(tmp_path / "x", doc.replace("hello 2030", "goodbye 2030"))


@runner_only
def test_step_by_step_commands_run_without_the_runners_settings_and_must_succeed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POSTMARK_SERVER_TOKEN", "the-runners-token")
    steps(tmp_path, '```console\n$ echo "[${POSTMARK_SERVER_TOKEN:-unset}]"\n[unset]\n```\n')
    with pytest.raises(AssertionError, match="exited with 3"):
        steps(tmp_path / "x", "```console\n$ exit 3\n```\n")


@runner_only
def test_exported_variables_stay_and_each_local_port_of_the_document_is_a_free_one(
    tmp_path: Path,
) -> None:
    doc = (
        "```console\n$ export GREETING=hello URL=http://127.0.0.1:9026/\n"
        "$ echo $GREETING 9025 9026 9025 $URL > seen\n```\n"
    )
    greeting, first, second, again, url = (steps(tmp_path, doc).root / "seen").read_text().split()
    assert (greeting, again) == ("hello", first)
    assert first != second
    assert url == f"http://127.0.0.1:{second}/"  # an exported port is the same free one


@runner_only
def test_a_uuid_an_earlier_command_printed_is_the_one_a_later_command_is_given(
    tmp_path: Path,
) -> None:
    shown = "94b48740-4236-4bbf-84c2-85a1be9628cd"
    steps(
        tmp_path,
        "```console\n"
        "$ python -c \"import uuid; u = str(uuid.uuid4()); open('id', 'w').write(u); print(u)\"\n"
        f"{shown}\n"
        f"$ grep -c {shown} id\n"
        "1\n"
        "```\n",
    )


@runner_only
def test_background_processes_are_awaited_then_killed_with_their_children(
    tmp_path: Path,
) -> None:
    doc = (
        "<!-- background -->\n```console\n"
        "$ sleep 60 & echo $! > child; echo 'listening on 127.0.0.1:9025, at ...'; wait\n"
        "listening on 127.0.0.1:9025, at ...\n```\n"
    )
    steps(tmp_path, doc)
    child = int((tmp_path / "reader" / "child").read_text())
    deadline = time.monotonic() + 5
    while Path(f"/proc/{child}").exists() and "zombie" not in _state(child):
        assert time.monotonic() < deadline, "the background command's child is still running"
        time.sleep(0.05)
    with pytest.raises(pytest.fail.Exception, match="exited; waited for 'ready'"):
        steps(tmp_path / "x", "<!-- background -->\n```console\n$ echo started\nready\n```\n")


def _state(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/status").read_text()
    return ""
