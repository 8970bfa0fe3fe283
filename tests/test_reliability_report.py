"""The reliability report renders each area's figures as a table."""

from __future__ import annotations

import pytest
from reliability_report import Report


def test_report_has_one_table_per_area_and_a_row_per_scenario():
    """Rows keep their figures in order, numbers formatted, names readable, pipes escaped."""
    report = Report()
    report.record("Faults", "kill a worker", sent=12345, lost=0, recovery_time="1.5 s")
    report.record("Faults", "broker restart", sent=10, hung=0, note="a | b")
    report.record("Security", "ruff S rules", findings=0)
    text = report.markdown()
    assert "## Faults" in text and "## Security" in text and "## Bad input" not in text
    assert text.count("| scenario | figures | notes |") == 2
    assert "| kill a worker | sent 12,345 · lost 0 · recovery time 1.5 s |  |" in text
    assert "| broker restart | sent 10 · hung 0 | a \\| b |" in text


def test_unknown_area_is_refused():
    """A typo in an area would hide a record; it is an error instead."""
    with pytest.raises(ValueError, match="area must be one of"):
        Report().record("Fault", "x")
