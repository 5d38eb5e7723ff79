"""Every status and reason a run can end in is documented in the quickstart's tables."""

from __future__ import annotations

from pathlib import Path

import pytest

from emailevents import Reason, Status

QUICKSTART = (Path(__file__).parent.parent / "docs" / "quickstart.md").read_text()


@pytest.mark.parametrize("value", [*Status, *Reason], ids=str)
def test_each_outcome_has_a_row_in_the_docs(value: Status | Reason) -> None:
    assert f"\n| `{value.value}` |" in QUICKSTART
