"""The reliability report renders each area's figures as a table."""

from __future__ import annotations

import pytest
from reliability_report import Report


def test_report_has_one_table_per_area_with_the_union_of_figures():
    """Rows keep their figures; a figure a row lacks is an empty cell; numbers are formatted."""
    report = Report()
    report.record("Faults", "kill a worker", sent=12345, lost=0, recovery="1.5 s")
    report.record("Faults", "broker restart", sent=10, hung=0, note="a | b")
    report.record("Security", "ruff S rules", findings=0)
    text = report.markdown()
    assert "## Faults" in text and "## Security" in text and "## Bad input" not in text
    assert "| scenario | sent | lost | recovery | hung | notes |" in text
    assert "| kill a worker | 12,345 | 0 | 1.5 s |  |  |" in text
    assert "| broker restart | 10 |  |  | 0 | a \\| b |" in text


def test_unknown_area_is_refused():
    """A typo in an area would hide a record; it is an error instead."""
    with pytest.raises(ValueError, match="area must be one of"):
        Report().record("Fault", "x")
