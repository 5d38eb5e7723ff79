"""The package's shape, read from its source: modules of a bounded size, private names kept
private, and no import cycle (``TYPE_CHECKING`` and function-level imports included).

See docs/architecture.md for what each module owns and may import.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

import emailevents

PACKAGE = Path(emailevents.__file__).parent
MAX_LINES = 700


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    tree: ast.Module

    @property
    def is_package(self) -> bool:
        return self.path.name == "__init__.py"


def _modules() -> dict[str, Module]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = Module(name, path, ast.parse(path.read_text(encoding="utf-8")))
    return found


MODULES = _modules()


def _absolute(module: Module, node: ast.ImportFrom) -> str:
    """The absolute name ``from X import ...`` refers to, relative imports resolved."""
    if not node.level:
        return node.module or ""
    base = module.name.split(".")
    base = base if module.is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _imports(module: Module) -> Iterator[tuple[ast.AST, str, str | None]]:
    """(node, module imported from, name or None) for every import anywhere in ``module``
    that reaches into the package."""
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "emailevents":
                    yield node, alias.name, None
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(module, node)
            if source.split(".")[0] == "emailevents":
                for alias in node.names:
                    yield node, source, alias.name


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _where(module: Module, node: ast.AST) -> str:
    return f"{module.path.relative_to(PACKAGE.parent)}:{getattr(node, 'lineno', 0)}"


def private_imports() -> list[str]:
    """Each import of another module's private name, or use of one through a module alias."""
    found = []
    for module in MODULES.values():
        aliases: dict[str, str] = {}
        for node, source, name in _imports(module):
            if name is None:
                for alias in node.names:  # type: ignore[attr-defined]
                    aliases[alias.asname or alias.name] = alias.name
                continue
            if f"{source}.{name}" in MODULES:  # a submodule, not a name
                aliases[name] = f"{source}.{name}"
                continue
            if _private(name) and source != module.name:
                found.append(f"{_where(module, node)} imports {source}.{name}")
        found.extend(
            f"{_where(module, node)} uses {aliases[node.value.id]}.{node.attr}"
            for node in ast.walk(module.tree)
            if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
            and _private(node.attr)
            and aliases[node.value.id] != module.name
        )
    return found


def private_subclasses() -> list[str]:
    """Each class deriving from a private class another module defines."""
    found = []
    for module in MODULES.values():
        imported = {
            alias.asname or alias.name: source
            for node, source, _ in _imports(module)
            if isinstance(node, ast.ImportFrom)
            for alias in node.names
        }
        for node in ast.walk(module.tree):
            if not isinstance(node, ast.ClassDef):
                continue
            for base in node.bases:
                name = base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", "")
                origin = imported.get(getattr(base, "id", ""), "")
                if _private(name) and (isinstance(base, ast.Attribute) or origin):
                    found.append(f"{_where(module, node)} {node.name} derives from {name}")
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (anywhere in it). ``from P import M`` with M a
    submodule is an edge to M (and to P, whose ``__init__`` runs); a package's own lazy table
    (PEP 562) is not an import."""
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for module in MODULES.values():
        for _, source, name in _imports(module):
            target = f"{source}.{name}" if f"{source}.{name}" in MODULES else source
            while target not in MODULES and "." in target:
                target = target.rsplit(".", 1)[0]
            for edge in {target, source} & set(MODULES):
                # A module's parent packages run first whatever it imports: not a choice of it.
                if edge != module.name and not module.name.startswith(f"{edge}."):
                    graph[module.name].add(edge)
    return graph


def cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle (its modules, the first repeated at the end), or ``[]``."""
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as error:
        return list(error.args[1])
    return []


def test_no_module_is_over_the_line_limit() -> None:
    lengths = {
        module.name: len(module.path.read_text(encoding="utf-8").splitlines())
        for module in MODULES.values()
    }
    assert {name: lines for name, lines in lengths.items() if lines > MAX_LINES} == {}


def test_no_module_imports_another_modules_private_names() -> None:
    assert private_imports() == []


def test_no_class_derives_from_another_modules_private_class() -> None:
    assert private_subclasses() == []


def test_the_modules_import_one_another_without_a_cycle() -> None:
    assert cycle(import_graph()) == []


# docs/architecture.md, "The modules": each top-level module or package of emailevents in its
# layer, highest first. A module imports only from its own layer's modules or lower ones.
LAYERS = [
    {"cli"},
    {"demo"},
    {"testing"},
    {"lint", "lintdigests", "findings"},
    {"preview"},
    {"samples", "stubs"},
    {"engine"},
    {"web"},
    {"batches", "prefetch"},
    {"retries"},
    {"relay", "schedules", "digestsend"},
    {"pipeline", "batchrun"},
    {"exclusions"},
    {"senders"},
    {"schema", "migrations"},
    {"store", "emitstore", "timeline", "suppressions", "preferences", "throttles", "digests"},
    {"registry"},
    {"yamlnodes", "yamlsyntax", "introspect", "expressions", "addresses", "tokens"},
    {"outcomes", "errors", "tables"},
]
# The pytest plugin's `fake_postmark` fixture serves the demo's templates, as documented.
UPWARD_ALLOWED = {("emailevents.testing.pytest_plugin", "emailevents.demo")}


def _layer(module: str) -> int:
    top = module.split(".")[1]
    return next(i for i, layer in enumerate(LAYERS) if top in layer)


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Each import of a module from a higher layer (the package's ``__init__`` aside)."""
    return [
        f"{module} imports {target}"
        for module, targets in sorted(graph.items())
        if module != "emailevents"
        for target in sorted(targets)
        if target != "emailevents"
        and _layer(target) < _layer(module)
        and (module, target) not in UPWARD_ALLOWED
    ]


def test_every_module_has_a_layer() -> None:
    tops = {name.split(".")[1] for name in MODULES if name != "emailevents"}
    assert tops == set().union(*LAYERS)


def test_modules_import_only_from_their_layer_or_below() -> None:
    assert upward_imports(import_graph()) == []


# The checks themselves, on small made-up packages: each can fail.


def _fake(files: dict[str, str]) -> dict[str, Module]:
    return {
        name: Module(name, PACKAGE / f"{name.replace('.', '/')}.py", ast.parse(text))
        for name, text in files.items()
    }


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"emailevents.a": "import emailevents.b\n", "emailevents.b": "from . import a\n"}, True),
        (
            {
                "emailevents.a": "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from emailevents.b import B\n",
                "emailevents.b": "def f():\n    from emailevents.a import A\n",
            },
            True,
        ),
        ({"emailevents.a": "import emailevents.b\n", "emailevents.b": "import os\n"}, False),
    ],
)
def test_cycles_are_found_wherever_the_import_is(
    monkeypatch: pytest.MonkeyPatch, files: dict[str, str], expected: bool
) -> None:
    monkeypatch.setattr(f"{__name__}.MODULES", _fake(files))
    assert bool(cycle(import_graph())) is expected


def test_an_upward_import_is_found(monkeypatch: pytest.MonkeyPatch) -> None:
    files = {"emailevents.store": "from emailevents import pipeline\n", "emailevents.pipeline": ""}
    monkeypatch.setattr(f"{__name__}.MODULES", _fake(files))
    assert upward_imports(import_graph()) == ["emailevents.store imports emailevents.pipeline"]


def test_private_names_are_found_imported_used_and_subclassed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    files = {
        "emailevents.a": "class _Base: ...\ndef _helper(): ...\n",
        "emailevents.b": "from emailevents.a import _helper\n",
        "emailevents.c": "from emailevents import a\nx = a._helper()\n",
        "emailevents.d": "from .a import _Base\nclass Mine(_Base): ...\n",
        "emailevents.e": "import emailevents.a as a\nclass Yours(a._Base): ...\n",
    }
    monkeypatch.setattr(f"{__name__}.MODULES", _fake(files))
    assert len(private_imports()) == 4  # b, c, d, e
    assert len(private_subclasses()) == 2  # d, e
