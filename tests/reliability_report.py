"""The reliability report: figures the fault, fuzz and security tests record, written at the end.

A test asks for the `reliability` fixture and calls `record(area, scenario, note, **figures)`;
when the session ends, every record goes to build/reliability.md and build/reliability.json
(MODELSERVE_RELIABILITY_REPORT names another .md path). docs/reliability.md is the copy of a
whole run's report. Tests assert their bars themselves: the report only writes down what was seen.
"""

from __future__ import annotations

import json
import os
import platform
import threading
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
AREAS = ("Faults", "Bad input", "Security")


@dataclass
class Record:
    """One scenario's figures."""

    area: str
    scenario: str
    note: str
    figures: dict[str, object] = field(default_factory=dict)


class Report:
    """The records of one test session."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self._lock = threading.Lock()

    def record(self, area: str, scenario: str, note: str = "", **figures: object) -> None:
        """Write down one scenario's figures (numbers, or short text such as '3.2 s')."""
        if area not in AREAS:
            raise ValueError(f"area must be one of {AREAS}, not {area!r}")
        with self._lock:
            self.records.append(Record(area, scenario, note, figures))

    def markdown(self) -> str:
        """The report as Markdown: one table per area, a row per scenario."""
        when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        lines = ["# Reliability and security report", "",
                 f"Written by the test suite on {when} ({platform.node()}, "
                 f"{os.cpu_count()} cores). Each row is one test's own count.", ""]
        for area in AREAS:
            lines += _table(area, [r for r in self.records if r.area == area])
        return "\n".join(lines)


def _table(area: str, records: list[Record]) -> list[str]:
    """One area's Markdown table: scenario, its figures as "name value" pairs, notes."""
    if not records:
        return []
    rows = [f"## {area}", "", "| scenario | figures | notes |", "|---|---|---|"]
    for record in sorted(records, key=lambda r: r.scenario):
        figures = " · ".join(f"{name.replace('_', ' ')} {_cell(value)}"
                             for name, value in record.figures.items())
        rows.append(f"| {record.scenario} | {figures} | {_cell(record.note)} |")
    return [*rows, ""]


def _cell(value: object) -> str:
    """A figure as a table cell: thousands separated, floats to two decimals."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return str(value).replace("|", "\\|")


_REPORT = Report()


@pytest.fixture(scope="session")
def reliability() -> Report:
    """The session's report; see the module docstring."""
    return _REPORT


@pytest.fixture
def tally(request: pytest.FixtureRequest, reliability: Report):
    """Count a property test's examples, accepted and refused; recorded under "Bad input" as
    "<the module's TALLY_SUBJECT>: <scenario>" when the test ends (set scenario, note)."""
    counts: Counter = Counter()
    yield counts
    scenario, note = counts.pop("scenario"), counts.pop("note", "")
    reliability.record("Bad input", f"{request.module.TALLY_SUBJECT}: {scenario}", note,
                       examples=counts["examples"], accepted=counts["accepted"],
                       refused=counts["refused"], other_exceptions=0)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Write the report if any test recorded something."""
    if not _REPORT.records:
        return
    target = Path(os.environ.get("MODELSERVE_RELIABILITY_REPORT", REPO / "build/reliability.md"))
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(_REPORT.markdown())
    target.with_suffix(".json").write_text(
        json.dumps([asdict(record) for record in _REPORT.records], indent=1))
