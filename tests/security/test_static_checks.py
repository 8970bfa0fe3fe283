"""Checks of the repository itself: ruff's security rules, known vulnerabilities, no keys."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PRIVATE_KEY = re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----\s*\n[A-Za-z0-9+/=]{40,}")


def test_ruff_security_rules_are_clean(reliability):
    """ruff's S rules (flake8-bandit) find nothing anywhere in the repository."""
    done = subprocess.run([BIN / "ruff", "check", "--select", "S", "--output-format", "json",
                           "."], cwd=REPO, capture_output=True, text=True, check=False)
    findings = json.loads(done.stdout)
    assert not findings, [f"{f['filename']}:{f['location']['row']} {f['code']}" for f in findings]
    suppressions = [line for path in (REPO / "src").rglob("*.py")
                    for line in path.read_text().splitlines() if "noqa: S" in line]
    reliability.record("Security", "ruff S rules (src, tests, bench, deploy)", findings=0,
                       suppressions_in_src=len(suppressions),
                       note="each suppression is an argument-list subprocess, our own URL, "
                            "a port choice or a checked archive")


@pytest.mark.slow  # the network: pip-audit asks PyPI
def test_locked_dependencies_have_no_known_vulnerability(tmp_path, reliability):
    """pip-audit over requirements.lock finds no known vulnerability; what it could not audit is
    looked up in PyPI's project data where that speaks for the locked release; the rest is said."""
    report = tmp_path / "audit.json"
    done = subprocess.run(
        [BIN / "pip-audit", "--no-deps", "--disable-pip", "--progress-spinner", "off",
         "-r", REPO / "requirements.lock", "--format", "json", "--output", report],
        capture_output=True, text=True, timeout=600, check=False)
    assert report.is_file(), f"pip-audit did not run: {done.stderr[-2000:]}"
    packages = json.loads(report.read_text())["dependencies"]
    vulnerable = {p["name"]: [v["id"] for v in p["vulns"]] for p in packages if p.get("vulns")}
    skipped = {p["name"]: p["skip_reason"] for p in packages if "skip_reason" in p}
    locked = {_normalized(name): version for name, version in
              (line.strip().split("==") for line in
               (REPO / "requirements.lock").read_text().splitlines() if "==" in line)}
    with ThreadPoolExecutor(8) as pool:
        looked_up = dict(zip(skipped, pool.map(_latest_release, skipped), strict=True))
    checked = {name for name, (latest, _) in looked_up.items() if latest == locked.get(name)}
    vulnerable |= {name: looked_up[name][1] for name in checked if looked_up[name][1]}
    unaudited = [f"{name} {locked.get(name)} (latest {looked_up[name][0]})"
                 for name in sorted(set(skipped) - checked)]
    reliability.record(
        "Security", "pip-audit of requirements.lock", packages=len(packages),
        audited_by_pip_audit=len(packages) - len(skipped),
        audited_from_pypi_project_data=len(checked),
        vulnerabilities=sum(map(len, vulnerable.values())),
        note=_audit_note(skipped, unaudited) + (f"; found: {vulnerable}" if vulnerable else ""))
    assert not vulnerable, vulnerable


def _normalized(name: str) -> str:
    """A project name as PyPI and pip-audit compare them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _latest_release(name: str) -> tuple[str | None, list[str]]:
    """PyPI's latest release of a project and the vulnerability ids PyPI lists for it."""
    url = f"https://pypi.org/pypi/{name}/json"
    try:
        with urllib.request.urlopen(url, timeout=30) as answer:  # noqa: S310 (fixed https URL)
            project = json.load(answer)
    except (OSError, ValueError):
        return None, []
    return project["info"]["version"], [v["id"] for v in project.get("vulnerabilities") or []]


def _audit_note(skipped: dict[str, str], unaudited: list[str]) -> str:
    """Why pip-audit skipped packages, and which remain unaudited."""
    if not skipped:
        return "pip-audit audited every package"
    reasons = {"per-version JSON API not reachable from here" if "not found on PyPI" in reason
               else reason for reason in skipped.values()}
    return (f"pip-audit skipped {len(skipped)} ({'; '.join(sorted(reasons))}); not audited: "
            f"{', '.join(unaudited) or 'none'}")


def test_no_private_key_is_committed(reliability):
    """No tracked file holds a private key (test fixtures hold only the header line)."""
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True,
                             check=True).stdout.split(b"\0")
    files = [REPO / name.decode() for name in tracked if name]
    found = [str(path) for path in files
             if path.is_file() and PRIVATE_KEY.search(path.read_bytes())]
    reliability.record("Security", "no private keys in the repository", files=len(files),
                       found=len(found))
    assert not found, found
