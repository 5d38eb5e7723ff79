"""The package's public names: all importable, each from the module that defines it, on demand."""

from __future__ import annotations

import ast
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
