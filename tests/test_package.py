"""The package's public names: all importable, each from the module that defines it, on demand."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import emailevents


def test_every_public_name_is_importable_from_the_package() -> None:
    for name in emailevents.__all__:
        assert getattr(emailevents, name) is not None, name
    namespace: dict[str, object] = {}
    exec("from emailevents import *", namespace)  # noqa: S102 - what users write
    assert set(emailevents.__all__) <= set(namespace)
    assert set(emailevents.__all__) <= set(dir(emailevents))


def test_the_lazy_table_matches_the_imports_type_checkers_read() -> None:
    tree = ast.parse(Path(emailevents.__file__).read_text(encoding="utf-8"))
    (checking,) = [node for node in tree.body if isinstance(node, ast.If)]
    imported = {
        alias.name: node.module
        for node in checking.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert imported == emailevents._MODULES
    assert sorted(imported) == sorted(emailevents.__all__)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match=r"^module 'emailevents' has no attribute 'Nope'$"):
        emailevents.Nope  # type: ignore[attr-defined]  # noqa: B018


def test_a_submodule_is_an_attribute_as_before() -> None:
    probe = "import emailevents\nprint(emailevents.store.metadata is emailevents.metadata)\n"
    done = subprocess.run(  # noqa: S603 - our own interpreter
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "True"


def test_importing_the_package_imports_no_dependency_until_a_name_is_used() -> None:
    probe = (
        "import sys, emailevents\n"
        "before = 'sqlalchemy' in sys.modules or 'celery' in sys.modules\n"
        "emailevents.EmailEvents\n"
        "print(before, 'celery' in sys.modules)\n"
    )
    done = subprocess.run(  # noqa: S603 - our own interpreter
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == ["False", "True"]


# Exceptions that never leave their module: control flow, or what a web handler turns into an
# HTTP answer.
PRIVATE_EXCEPTIONS = {"_IllegalAddressError", "_ConfigurationProblem"}


def _modules() -> list[str]:
    names = [m.name for m in pkgutil.walk_packages(emailevents.__path__, "emailevents.")]
    # demo.app opens the database a demo run left behind, at import; Alembic runs
    # migrations.env inside a migration context, never an import.
    skipped = {"emailevents.demo.app", "emailevents.migrations.env"}
    return [name for name in names if name not in skipped]


@pytest.mark.parametrize("module", _modules())
def test_every_exception_is_defined_in_errors(module: str) -> None:
    found = importlib.import_module(module)
    for name, value in vars(found).items():
        if not (isinstance(value, type) and issubclass(value, BaseException)):
            continue
        if value.__module__ != module or name in PRIVATE_EXCEPTIONS:
            continue  # imported from elsewhere, or never raised outside its module
        assert module == "emailevents.errors", f"{module}.{name}: define it in errors.py"


def test_every_error_has_the_root_and_a_leaf_the_built_in_it_resembles() -> None:
    errors = importlib.import_module("emailevents.errors")
    classes = [
        value
        for value in vars(errors).values()
        if isinstance(value, type)
        and issubclass(value, BaseException)
        and value.__module__ == errors.__name__
    ]
    assert len(classes) > 10
    for cls in classes:
        assert issubclass(cls, emailevents.EmailEventsError), cls.__name__
        if any(other is not cls and issubclass(other, cls) for other in classes):
            continue  # a family's base (EmailEventsError, EmitError): its leaves say what
        built_in = [
            base
            for base in cls.__mro__
            if base.__module__ == "builtins" and base not in (BaseException, Exception, object)
        ]
        assert built_in, f"{cls.__name__}: give it the built-in it resembles (ValueError, ...)"
