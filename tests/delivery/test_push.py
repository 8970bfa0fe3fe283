"""Delivery by `git push` with real git and a real serving stack: gated, atomic, recorded."""

from __future__ import annotations

import json
import os
import time
from collections import Counter

import pytest
from cli_helpers import run_cli
from serving.stack_helpers import ROW, post_json

from delivery import pushes
from delivery.gitops import (
    Load,
    commit,
    commit_and_push,
    git,
    push,
    registry_state,
    reported_live_version,
)
from modelserve.registry import Registry


@pytest.mark.slow  # the production stack
def test_init_is_idempotent_and_hooks_are_shims(production):
    """A second init changes nothing; hooks hand over to the package."""
    again = run_cli("delivery", "init", "--web-url", production.url, home=production.home)
    assert again.returncode == 0 and "unchanged" in again.stdout
    hook = (production.home / "delivery" / "models.git" / "hooks" / "pre-receive").read_text()
    assert "-m modelserve delivery pre-receive" in hook and len(hook.splitlines()) <= 3


@pytest.mark.slow
def test_a_good_push_goes_live_under_load_with_no_failed_request(production, checkout,
                                                                   shared_data):
    """The development seed model (better) is pushed: it is served, nothing fails."""
    before = registry_state(production.home)[0]
    pushes.copy_seed(shared_data, "development", checkout)
    with Load(production.url) as load:
        started = time.monotonic()
        result = commit_and_push(checkout, "better model")
        elapsed = time.monotonic() - started
        time.sleep(1)
    assert result.returncode == 0, result.stderr
    assert "accepted" in result.stderr and "push -> live in" in result.stderr, result.stderr
    live = registry_state(production.home)[0]
    assert live != before
    assert not load.failures, load.failures[:5]
    assert set(load.versions) == {before, live}, load.versions
    assert post_json(f"{production.url}/api/v1/predict", {"rows": [ROW]}).json()[
        "model_version"] == live
    history = Registry(production.home / "registry").history()[-1]
    assert history["action"] == "activate" and history["source"].startswith("git push ")
    print(f"push -> live, measured by the pusher: {elapsed:.1f} s; the hooks said:")
    print("\n".join(line for line in result.stderr.splitlines() if "remote:" in line))


BAD_PUSHES = pushes.REFUSED_KINDS


@pytest.fixture(scope="module")
def bad_push_tally(reliability):
    """What the bad pushes of this module did, written to the report as one row at the end."""
    tally: Counter = Counter()
    yield tally
    if tally["kinds"]:
        reliability.record(
            "Bad input", "bad pushes (git push on production) under load",
            "kinds: " + ", ".join(breaker.__name__ for breaker, _ in BAD_PUSHES), **tally)


@pytest.mark.slow
@pytest.mark.parametrize(("breaker", "words"), BAD_PUSHES,
                         ids=[breaker.__name__ for breaker, _ in BAD_PUSHES])
def test_a_bad_push_is_refused_and_changes_nothing(production, checkout, shared_data,
                                                   breaker, words, bad_push_tally):
    """Each bad model: one `remote:` line saying why; registry and answers unchanged."""
    pushes.copy_seed(shared_data, "production", checkout)
    breaker(checkout)
    state = registry_state(production.home)
    with Load(production.url) as load:
        result = commit_and_push(checkout, f"bad: {breaker.__name__}")
    refusal = [line for line in result.stderr.splitlines() if "refused" in line]
    bad_push_tally.update(
        kinds=1, refused=int(result.returncode != 0 and bool(refusal) and words in refusal[0]),
        versions_changed=int(registry_state(production.home) != state),
        requests=len(load.answers), requests_failed=len(load.failures))
    assert result.returncode != 0
    assert refusal and words in refusal[0], result.stderr
    assert "Traceback" not in result.stderr and "/.gate-" not in result.stderr
    assert registry_state(production.home) == state
    assert not load.failures and set(load.versions) == {state[0]}, load.versions
    assert "pre-receive hook declined" in result.stderr


@pytest.mark.slow
def test_too_large_a_push_is_refused(production, checkout, shared_data):
    """Over the configured size limit: refused before anything is extracted."""
    home = production.home
    assert run_cli("delivery", "init", "--web-url", production.url, "--max-mb", "1",
                   home=home).returncode == 0
    try:
        pushes.copy_seed(shared_data, "production", checkout)
        pushes.too_large(checkout)
        state = registry_state(home)
        result = commit_and_push(checkout, "ballast")
    finally:
        run_cli("delivery", "init", "--web-url", production.url, home=home)
    assert result.returncode != 0 and "byte limit" in result.stderr, result.stderr
    assert registry_state(home) == state


@pytest.mark.slow
def test_other_branches_are_refused_or_stored_not_deployed(production, checkout, shared_data):
    """Another branch is refused by default; with `--other-refs store`, kept and not deployed."""
    pushes.copy_seed(shared_data, "development", checkout)
    state = registry_state(production.home)
    refused = commit_and_push(checkout, "experiment", branch="experiment")
    assert refused.returncode != 0 and "only master is accepted" in refused.stderr, (
        refused.stderr)
    home = production.home
    assert run_cli("delivery", "init", "--web-url", production.url, "--other-refs", "store",
                   home=home).returncode == 0
    try:
        result = push(checkout, branch="experiment")
    finally:
        run_cli("delivery", "init", "--web-url", production.url, home=home)
    assert result.returncode == 0 and "stored, not deployed" in result.stderr, result.stderr
    assert registry_state(production.home) == state


@pytest.mark.slow
def test_force_deploy_overrides_the_accuracy_gate_and_is_recorded(production, checkout,
                                                                  shared_data):
    """`-o force-deploy -o reason=...` lets a worse model through, on the record; rollback."""
    pushes.copy_seed(shared_data, "production", checkout)
    pushes.much_worse(checkout)
    before = registry_state(production.home)[0]
    result = commit_and_push(checkout, "forced", "force-deploy", "reason=incident 42")
    assert result.returncode == 0, result.stderr
    assert "forced despite" in result.stderr
    event = Registry(production.home / "registry").history()[-1]
    assert event["reason"] == "force-deploy: incident 42"
    rolled = run_cli("models", "rollback", "--reason", "undo forced push", home=production.home)
    assert rolled.returncode == 0, rolled.stderr
    assert registry_state(production.home)[0] == before
    assert os.path.isdir(production.home / "delivery" / "models.git")


@pytest.mark.slow
def test_a_keras_bundle_push_is_checked_and_a_foreign_contract_refused(production, checkout,
                                                                        trained_bundle):
    """A bundle goes through the clean-process check; a renamed feature is refused."""
    pushes.copy_bundle(trained_bundle, checkout)
    pushes.renamed_feature(checkout)
    state = registry_state(production.home)
    refused = commit_and_push(checkout, "foreign contract")
    assert refused.returncode != 0 and "production's input contract" in refused.stderr, (
        refused.stderr)
    assert registry_state(production.home) == state
    pushes.copy_bundle(trained_bundle, checkout)
    accepted = commit_and_push(checkout, "bundle", "force-deploy", "reason=bundle path test")
    assert accepted.returncode == 0 and "push -> live in" in accepted.stderr, accepted.stderr
    live = registry_state(production.home)[0]
    assert live == json.loads((trained_bundle / "manifest.json").read_text())["version"]
    print(next(line for line in accepted.stderr.splitlines() if "push -> live" in line))
    rolled = run_cli("models", "rollback", "--reason", "bundle test done", home=production.home)
    assert rolled.returncode == 0 and registry_state(production.home)[0] == state[0]


@pytest.mark.slow
def test_pushing_a_revert_puts_the_previous_version_back(production, checkout, shared_data):
    """`git revert` + push restores the earlier version itself, without the gate's scoring.

    The earlier model is worse than the one it replaced (the gate would refuse it as a new
    model); a revert to files that were live before is a rollback, and goes through.
    """
    pushes.copy_seed(shared_data, "production", checkout)
    first = commit_and_push(checkout, "baseline", "force-deploy", "reason=revert test baseline")
    assert first.returncode == 0, first.stderr
    earlier = registry_state(production.home)[0]
    pushes.copy_seed(shared_data, "development", checkout)
    assert commit_and_push(checkout, "better model").returncode == 0
    later = registry_state(production.home)[0]
    assert later != earlier
    git("revert", "--no-edit", "HEAD", cwd=checkout)
    (checkout / "CHANGES").write_text("back to the baseline\n")  # other files may change too
    commit(checkout, "why we went back")
    with Load(production.url) as load:
        result = push(checkout)
        time.sleep(1)
    assert result.returncode == 0, result.stderr
    assert f"a revert to the model files of {earlier}" in result.stderr, result.stderr
    assert reported_live_version(result) == earlier == registry_state(production.home)[0]
    assert not load.failures and set(load.versions) == {later, earlier}, load.versions
    assert Registry(production.home / "registry").history()[-1]["reason"] == (
        f"revert to {earlier}")


@pytest.mark.slow
def test_the_documented_workflow_train_into_a_folder_commit_push(production, checkout):
    """`modelserve train --out REPO/models`, commit, push: the configured folder deploys."""
    home = production.home
    assert run_cli("delivery", "init", "--web-url", production.url, "--folder", "models",
                   home=home).returncode == 0
    try:
        (checkout / "train.sh").write_text("modelserve train --out models\n")  # beside the model
        trained = run_cli("train", "--epochs", "3", "--seed", "11", "--out",
                          checkout / "models", home=home)
        assert trained.returncode == 0, trained.stderr
        result = commit_and_push(checkout, "retrained", "force-deploy", "reason=workflow test")
    finally:
        run_cli("delivery", "init", "--web-url", production.url, home=home)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((checkout / "models" / "manifest.json").read_text())
    assert reported_live_version(result) == manifest["version"] == registry_state(home)[0]


@pytest.mark.slow
def test_a_functional_model_that_passes_the_gate_goes_live(production, checkout, dataset,
                                                           tmp_path, reliability):
    """No plan expresses a Functional model: the gate checks it with Keras, workers serve it."""
    bundle = pushes.functional_bundle(dataset, tmp_path / "functional")
    pushes.copy_bundle(tmp_path / "functional", checkout)
    before = registry_state(production.home)[0]
    # Keras, not a plan, serves it: each worker imports TensorFlow on its first batch.
    assert run_cli("delivery", "init", "--web-url", production.url, "--live-timeout", "120",
                   home=production.home).returncode == 0
    try:
        result = commit_and_push(checkout, "functional", "force-deploy",
                                 "reason=functional test")
        assert result.returncode == 0 and "push -> live in" in result.stderr, result.stderr
        assert reported_live_version(result) == bundle["version"]
        assert registry_state(production.home)[0] == bundle["version"]
        answer = post_json(f"{production.url}/api/v1/predict", {"rows": [ROW]}).json()
        assert answer["model_version"] == bundle["version"], answer
        assert not (production.home / "registry" / "versions" / bundle["version"] /
                    "plan.npz").exists()  # Keras serves it, as the gate checked it
    finally:
        run_cli("models", "activate", before, "--reason", "functional test done",
                home=production.home)
        run_cli("delivery", "init", "--web-url", production.url, home=production.home)
    reliability.record("Security", "a pushed Functional-API model",
                       "accepted by the gate and served by the workers (Keras, no plan); "
                       "failed to activate before (plan.npz: No such file)",
                       accepted=1, live=1)


@pytest.mark.slow
def test_a_failure_after_acceptance_says_what_happened_without_server_paths(
        production, checkout, shared_data, reliability):
    """The registry refuses the accepted model (staging is a file): one line, no paths."""
    staging = production.home / "registry" / "staging"
    aside = staging.with_name("staging.aside")
    pushes.copy_seed(shared_data, "development", checkout)
    pushes.nudged(checkout, 1e-4)
    state = registry_state(production.home)
    staging.rename(aside)
    staging.write_text("not a folder\n")
    try:
        result = commit_and_push(checkout, "accepted, then the registry fails")
    finally:
        staging.unlink()
        aside.rename(staging)
    lines = [line for line in result.stderr.splitlines() if "accepted but not activated" in line]
    assert len(lines) == 1, result.stderr
    assert f"production still serves {state[0]}" in lines[0], lines[0]
    assert "nothing was added" in lines[0] and "the registry" in lines[0], lines[0]
    said = "\n".join(line for line in result.stderr.splitlines() if line.startswith("remote:"))
    for path in (str(production.home), str(production.home.resolve()), "/registry", "pending/"):
        assert path not in said, said
    assert "Traceback" not in result.stderr
    assert registry_state(production.home) == state
    assert (production.home / "delivery" / "gate-errors.log").read_text().count(
        "RegistryError") >= 1
    reliability.record("Security", "a failure after the gate accepted a push",
                       "one line: what failed and what production still serves, without "
                       "server paths; the traceback stays in the server's delivery log",
                       failures=1, server_paths_shown=0)
