"""The sandbox's pure parts: backend choice, command lines, limits, the tar protocol."""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import replace

import pytest

from modelserve.sandbox import protocol
from modelserve.sandbox.policy import (
    JOB_ENVIRONMENT,
    Backend,
    ConfinePlan,
    Facts,
    Limits,
    choose_backend,
    exposed_paths,
    hidden_for_systemd,
    job_argv,
    sudo_argv,
    sudoers_path,
    sudoers_text,
    systemd_argv,
    unshare_argv,
    valid_user_name,
)

PYTHON = "/opt/modelserve/bin/python"
ROOT = Facts(uid=0, user="root", systemd_booted=False, has_systemd_run=True, has_unshare=True,
             has_sudo=True, sudo_rule=False)
DEPLOY = replace(ROOT, uid=1000, user="deploy")


def test_root_uses_systemd_where_it_runs_and_namespaces_elsewhere():
    """systemd-run needs systemd as PID 1; without it root builds the namespaces itself."""
    assert choose_backend(replace(ROOT, systemd_booted=True)).backend is Backend.SYSTEMD
    assert choose_backend(ROOT).backend is Backend.NAMESPACES
    assert choose_backend(replace(ROOT, systemd_booted=True, has_systemd_run=False)).backend \
        is Backend.NAMESPACES
    nothing = choose_backend(replace(ROOT, has_unshare=False))
    assert nothing.backend is None and "unshare" in nothing.reason


def test_a_non_root_account_needs_the_sudo_rule_and_is_told_the_command():
    """Without a rule: no backend, and one line naming the setup command for this account."""
    assert choose_backend(replace(DEPLOY, sudo_rule=True)).backend is Backend.SUDO
    refused = choose_backend(DEPLOY)
    assert refused.backend is None
    assert refused.reason.startswith("refused:") and "\n" not in refused.reason
    assert "modelserve sandbox setup --for-user deploy" in refused.reason
    assert choose_backend(replace(DEPLOY, sudo_rule=True, has_sudo=False)).backend is None


def test_an_override_is_honoured_only_where_it_can_work():
    """MODELSERVE_SANDBOX picks a backend, never one that needs what the caller lacks."""
    assert choose_backend(replace(DEPLOY, override="rlimits")).backend is Backend.RLIMITS
    assert choose_backend(replace(ROOT, override="rlimits")).backend is Backend.RLIMITS
    assert choose_backend(replace(DEPLOY, override="namespaces")).backend is None
    assert choose_backend(replace(ROOT, override="systemd")).backend is None
    assert choose_backend(replace(ROOT, override="namespaces")).backend is Backend.NAMESPACES
    assert choose_backend(replace(DEPLOY, override="sudo")).backend is None
    unknown = choose_backend(replace(ROOT, override="none"))
    assert unknown.backend is None and "rlimits" in unknown.reason


def test_the_job_command_lines_are_fixed():
    """Isolated mode, fixed module names, known jobs only."""
    assert job_argv(PYTHON, "check") == [PYTHON, "-I", "-m", "modelserve.sandbox.jobs", "check"]
    assert sudo_argv(PYTHON, "score") == ["sudo", "-n", PYTHON, "-I", "-m",
                                          "modelserve.sandbox.privileged", "score"]
    with pytest.raises(ValueError):
        job_argv(PYTHON, "sh")
    with pytest.raises(ValueError):
        sudo_argv(PYTHON, "check; sh")


def test_unshare_takes_every_namespace_then_confines():
    """Network, mount, pid, ipc and uts; then confine, which forks the job as their PID 1."""
    plan = ConfinePlan(Limits(), exposed=("/opt/modelserve",))
    argv = unshare_argv(PYTHON, plan, job_argv(PYTHON, "check"))
    for flag in ("--net", "--mount", "--pid", "--ipc", "--uts"):
        assert flag in argv
    confine = argv.index("modelserve.sandbox.confine")
    assert ConfinePlan.from_json(argv[confine + 1]) == plan
    assert argv[confine + 2:] == ["--", *job_argv(PYTHON, "check")]


def test_systemd_units_get_a_dynamic_user_no_network_hidden_homes_and_the_limits():
    """The unit's properties carry the whole policy, limits included."""
    limits = Limits(memory_bytes=1 << 30, cpu_seconds=30, wall_seconds=45.0, processes=64)
    argv = systemd_argv(limits, job_argv(PYTHON, "check"), ("/root/.pyenv/versions/3.11",),
                        ("/var/lib/modelserve",))
    properties = {argv[i + 1] for i, arg in enumerate(argv) if arg == "-p"}
    for wanted in ("DynamicUser=yes", "PrivateNetwork=yes", "ProtectHome=tmpfs",
                   "ProtectSystem=strict", "PrivateTmp=yes", "NoNewPrivileges=yes",
                   "CapabilityBoundingSet=", "RestrictAddressFamilies=AF_UNIX",
                   "MemoryMax=1073741824", "MemorySwapMax=0", "LimitCPU=30:31",
                   "RuntimeMaxSec=45", "TasksMax=64", "LimitCORE=0",
                   "BindReadOnlyPaths=/root/.pyenv/versions/3.11",
                   "TemporaryFileSystem=/var/lib/modelserve:ro"):
        assert wanted in properties, wanted
    assert argv[:4] == ["systemd-run", "--wait", "--pipe", "--collect"]
    assert argv[argv.index("--") + 1:] == job_argv(PYTHON, "check")
    setenv = {argv[i + 1].split("=")[0] for i, arg in enumerate(argv) if arg == "--setenv"}
    assert setenv == {*JOB_ENVIRONMENT, "HOME", "TMPDIR"}


def test_paths_to_expose_and_hide():
    """Nested paths collapse to the outer one; homes are already hidden by ProtectHome."""
    assert exposed_paths(["/opt/a/lib", "/opt/a", "/root/x/", "relative"]) == ("/opt/a", "/root/x")
    assert hidden_for_systemd(("/var/lib/modelserve", "/home/deploy/.local", "/srv")) == \
        ("/var/lib/modelserve", "/srv")


def test_limits_only_shrink():
    """A caller may ask for less wall time, never more."""
    limits = Limits(wall_seconds=100)
    assert limits.within(None) == limits and limits.within(500) == limits
    assert limits.within(20).wall_seconds == 20 and limits.within(0).wall_seconds == 1.0


def test_the_sudoers_rule_names_exactly_the_four_job_command_lines():
    """One account, our interpreter, the privileged module, the fixed job names; no wildcard."""
    text = sudoers_text("deploy", PYTHON)
    rule = [line for line in text.splitlines() if not line.startswith("#")]
    assert rule == [f"deploy ALL=(root) NOPASSWD: {PYTHON} -I -m modelserve.sandbox.privileged "
                    f"check, {PYTHON} -I -m modelserve.sandbox.privileged convert, {PYTHON} -I "
                    f"-m modelserve.sandbox.privileged score, {PYTHON} -I "
                    "-m modelserve.sandbox.privileged import"]
    assert "*" not in text and sudoers_path("deploy") == "/etc/sudoers.d/modelserve-sandbox-deploy"
    for user in ("root ALL", "a,b", "x" * 40, "-rf", "Deploy"):
        assert not valid_user_name(user)
        with pytest.raises(ValueError):
            sudoers_text(user, PYTHON)
    for python in ("python", "/opt/my venv/bin/python", "/opt/*/python", "/opt/a,b/python"):
        with pytest.raises(ValueError):
            sudoers_text("deploy", python)


def _tar(*members: tarfile.TarInfo, data: bytes = b"x") -> bytes:
    """A tar of the given members (regular files get `data`)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for member in members:
            if member.isfile():
                member.size = len(data)
                tar.addfile(member, io.BytesIO(data))
            else:
                tar.addfile(member)
    return buffer.getvalue()


def _answer(result: dict, **files: bytes) -> bytes:
    """An output tar as a job writes it."""
    buffer = io.BytesIO()
    protocol.write_tar(buffer, {"result.json": json.dumps(result).encode(), **files})
    return buffer.getvalue()


def test_an_answer_round_trips_and_a_refusal_is_one_printable_line():
    """Result and files come back as sent; an error is flattened to one printable line."""
    answer = protocol.read_answer(_answer({"result": {"rows": 2}}, **{"plan.npz": b"P"}),
                                  1 << 20, {"plan.npz"})
    assert answer.result == {"rows": 2} and answer.files == {"plan.npz": b"P"}
    refused = protocol.read_answer(_answer({"error": "bad\nmodel\x1b[31m"}), 1 << 20, set())
    assert refused.error == "bad model?[31m"


@pytest.mark.parametrize("member", [
    tarfile.TarInfo("../escape"), tarfile.TarInfo("a/b"), tarfile.TarInfo(".hidden"),
], ids=["parent", "nested", "dot"])
def test_answers_with_unplain_names_are_refused(member):
    """Member names are plain names: nothing can land outside the directory they go to."""
    with pytest.raises(protocol.ProtocolError, match="plain"):
        protocol.read_answer(_tar(member), 1 << 20, {"plan.npz"})


def test_answers_with_links_unknown_files_or_too_many_bytes_are_refused():
    """Only regular files the job may give, within the byte limit and the member cap."""
    link = tarfile.TarInfo("plan.npz")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/shadow"
    with pytest.raises(protocol.ProtocolError, match="plain file"):
        protocol.read_answer(_tar(link), 1 << 20, {"plan.npz"})
    with pytest.raises(protocol.ProtocolError, match="must not give"):
        protocol.read_answer(_answer({"result": {}}, **{"authorized_keys": b"k"}), 1 << 20,
                             {"plan.npz"})
    with pytest.raises(protocol.ProtocolError, match="more than 100 bytes"):
        protocol.read_answer(_answer({"result": {}}, **{"plan.npz": b"x" * 200}), 100,
                             {"plan.npz"})
    many = [tarfile.TarInfo(f"f{i}") for i in range(protocol.MAX_MEMBERS + 1)]
    with pytest.raises(protocol.ProtocolError, match="more than"):
        protocol.read_answer(_tar(*many), 1 << 20, {m.name for m in many})
    with pytest.raises(protocol.ProtocolError, match="tar"):
        protocol.read_answer(b"not a tar" * 100, 1 << 20, set())
    with pytest.raises(protocol.ProtocolError, match="no result.json"):
        protocol.read_answer(_tar(tarfile.TarInfo("plan.npz")), 1 << 20, {"plan.npz"})


def test_requests_are_typed_and_exact():
    """A request or result with missing or extra keys is refused, not half-read."""
    request = protocol.CheckRequest("/srv/bundle")
    assert protocol.from_json(protocol.CheckRequest, json.loads(protocol.to_json(request))) == \
        request
    with pytest.raises(protocol.ProtocolError):
        protocol.from_json(protocol.CheckResult, {"version": "v", "examples": 1})
    with pytest.raises(protocol.ProtocolError):
        protocol.from_json(protocol.ScoreRequest, {"shown": "b", "extra": 1})
