"""Delivery by name over real SSH: a folder per model, all of a push's models or none.

The server is a home of its own (the Pima default model `diabetes` and an iris classifier
`iris`, both live, each with its stored data) behind an sshd in a network namespace. No
serving stack: what is tested is what the registry serves (the workers follow it).
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from cli_helpers import run_cli
from serving.conftest import prepare_home
from tabular import write_table
from tiers import needs

from delivery import pushes
from delivery.gitops import commit_and_push, git
from delivery.hosts import NetnsHost, SshClient, generate_key
from modelserve.model.bundle import read_manifest, write_manifest
from modelserve.model.dataset import parse_table_file
from modelserve.model.training import TrainingConfig, train_table_bundle
from modelserve.registry import Registry
from modelserve.registry.catalog import Catalog

pytestmark = pytest.mark.slow  # root, sshd in a namespace, the sandbox, training


@dataclass(frozen=True)
class Server:
    """The production home, its sshd host, a development key's client and the iris bundle."""

    home: Path
    host: NetnsHost
    client: SshClient
    iris: Path  # the bundle live as iris
    work: Path

    @property
    def url(self) -> str:
        """The repository over SSH."""
        return f"root@{self.host.address}:{self.home / 'delivery' / 'models.git'}"

    def registry(self, name: str) -> Registry:
        """A model's registry."""
        return Catalog(self.home / "registry", "diabetes").registry(name)

    def state(self, name: str) -> tuple[str | None, list[str], int]:
        """A model's active version, stored versions and history length."""
        registry = self.registry(name)
        return (registry.active_version(), sorted(v.version for v in registry.list_versions()),
                len(registry.history()))

    def push(self, checkout: Path, message: str, *options: str):
        """Commit everything and push it over SSH; stderr holds the `remote:` lines."""
        return commit_and_push(checkout, message, *options, env=self.client.git_env())


@pytest.fixture(scope="module")
@needs("root, sshd in a network namespace, the model sandbox and Keras training")
def server(tmp_path_factory, shared_data: Path, pima_csv: Path):
    """Two live models with their data, delivery set up, the repository reachable over SSH."""
    work = tmp_path_factory.mktemp("models")
    home = work / "home"
    # The session's template with that `models activate` already run on it (serving/conftest).
    prepare_home(home, shared_data, pima_csv, active="production")
    path, label = write_table(work, "multiclass")
    stored = run_cli("data", "import", path, "--label", label, "--name", "iris", home=home)
    assert stored.returncode == 0, stored.stderr
    train_table_bundle(parse_table_file(path, label), TrainingConfig(epochs=10), work / "iris")
    added = run_cli("models", "add", work / "iris", "--name", "iris", "--activate", home=home)
    assert added.returncode == 0, added.stderr
    # No stack: the push is taken and activated, not served (no wait for the workers).
    init = run_cli("delivery", "init", "--web-url", "http://127.0.0.1:9", "--live-timeout", "0",
                   home=home)
    assert init.returncode == 0, init.stderr
    (work / "dev-ssh").mkdir(mode=0o700)
    key = generate_key(work / "dev-ssh")
    keys = work / "production-ssh"
    authorized = run_cli("delivery", "authorize", f"{key}.pub", "--ssh-dir", keys, home=home)
    assert authorized.returncode == 0, authorized.stderr
    with NetnsHost(root_keys=keys / "authorized_keys") as host:
        yield Server(home, host, host.client(key), work / "iris", work)


@pytest.fixture
def checkout(server: Server, tmp_path: Path) -> Path:
    """A development clone of the production repository, over SSH."""
    cloned = server.client.git("clone", "-q", server.url, str(tmp_path / "dev"))
    assert cloned.returncode == 0, cloned.stderr + server.host.log()
    return tmp_path / "dev"


def renamed_copy(bundle: Path, into: Path, note: str) -> str:
    """Put a bundle into a folder under a new version (same weights, another note)."""
    into.mkdir(parents=True, exist_ok=True)
    pushes.copy_bundle(bundle, into)
    manifest = read_manifest(into)
    manifest["source"] = {"kind": "trained", "note": note}
    manifest.pop("version", None)
    return write_manifest(into, manifest)["version"]


def lines(result, words: str) -> list[str]:
    """The `remote:` lines holding these words."""
    return [line for line in result.stderr.splitlines() if words in line]


def last_event(server: Server, name: str) -> dict:
    """A model's latest history event."""
    return server.registry(name).history()[-1]


def head(checkout: Path) -> str:
    """The checkout's commit."""
    return git("rev-parse", "HEAD", cwd=checkout).stdout.strip()


def test_a_push_of_one_model_deploys_that_one_only(server, checkout, shared_data):
    """Root (diabetes) and iris/ in one repository: a change to iris/ deploys iris alone."""
    pushes.copy_seed(shared_data, "development", checkout)
    first = server.push(checkout, "diabetes: the development model")
    assert first.returncode == 0, first.stderr
    assert lines(first, "live: ") and "(diabetes, was " in lines(first, "live: ")[0], first.stderr
    diabetes, iris = server.state("diabetes"), server.state("iris")

    version = renamed_copy(server.iris, checkout / "iris", "iris, retrained")
    result = server.push(checkout, "iris: retrained")
    assert result.returncode == 0, result.stderr
    accepted = lines(result, "accepted ")
    assert len(accepted) == 1 and f"accepted {head(checkout)[:12]} for iris in " in accepted[0]
    assert re.search(r"accuracy [\d.]+ on this server's \d+ evaluation rows \(live model: ",
                     accepted[0]), accepted
    live = lines(result, "live: ")
    assert len(live) == 1 and f"live: {version} (iris, was {iris[0]}); accuracy " in live[0]
    assert server.state("diabetes") == diabetes  # active version, versions and history alike
    assert server.registry("iris").active_version() == version
    event = last_event(server, "iris")
    assert (event["action"], event["source"]) == ("activate", f"git push {head(checkout)[:12]}")
    print("\n".join(line for line in result.stderr.splitlines() if "remote:" in line))


def test_a_refused_push_of_two_models_changes_neither(server, checkout, shared_data):
    """A good diabetes and an iris of another contract in one push: both refused, one line."""
    if not (checkout / "iris").is_dir():  # run alone: the repository holds no iris/ yet
        renamed_copy(server.iris, checkout / "iris", "iris, retrained")
    pushes.copy_seed(shared_data, "development", checkout)
    pushes.nudged(checkout, 2e-4)
    renamed_copy(server.iris, checkout / "iris", "iris, another contract")
    pushes.renamed_feature(checkout / "iris")
    before = {name: server.state(name) for name in ("diabetes", "iris")}
    result = server.push(checkout, "two models, one bad")
    assert result.returncode != 0, result.stderr
    refused = lines(result, "refused")
    assert len(refused) == 1 and "refused: model iris: the model takes [" in refused[0], (
        result.stderr)
    assert "production's input contract is [" in refused[0]
    assert lines(result, "nothing deployed: diabetes passed the gate, but a push deploys all "
                 "its models or none"), result.stderr
    assert "Traceback" not in result.stderr and "pre-receive hook declined" in result.stderr
    assert {name: server.state(name) for name in ("diabetes", "iris")} == before


def test_an_activation_failing_midway_puts_back_what_was_activated(server, checkout,
                                                                  shared_data, tmp_path):
    """diabetes goes live, then iris cannot: diabetes is put back, one line says so; retried."""
    pushes.copy_seed(shared_data, "development", checkout)
    pushes.nudged(checkout, 3e-4)
    version = renamed_copy(server.iris, checkout / "iris", "iris, stored beforehand")
    # Stored already, so that its add needs no lock; the activation then fails on the lock.
    assert run_cli("models", "add", checkout / "iris", "--name", "iris",
                   home=server.home).returncode == 0
    lock = server.home / "registry" / "models" / "iris" / ".lock"
    lock.unlink(missing_ok=True)
    lock.mkdir()
    diabetes, iris = server.state("diabetes"), server.state("iris")
    try:
        result = server.push(checkout, "two models, the second cannot be activated")
    finally:
        lock.rmdir()
    failed = lines(result, "accepted but not activated")
    assert len(failed) == 1, result.stderr
    assert "model iris: cannot activate" in failed[0], failed[0]
    assert f"put back: diabetes back to {diabetes[0]}" in failed[0], failed[0]
    assert f"production still serves {diabetes[0]} (diabetes), {iris[0]} (iris)" in failed[0]
    said = "\n".join(lines(result, "remote:"))
    assert str(server.home) not in said and "Traceback" not in said, said
    assert server.registry("diabetes").active_version() == diabetes[0]
    assert server.state("iris") == iris
    events = server.registry("diabetes").history()[-2:]
    assert [event["action"] for event in events] == ["activate", "activate"]
    assert events[1]["reason"] == "put back: the push's activation of iris failed"
    assert events[0]["source"] == events[1]["source"] == f"git push {head(checkout)[:12]}"

    # The same files in a new commit: they never went live, so they deploy now.
    again = server.push(checkout, "try again")
    assert again.returncode == 0, again.stderr
    assert len(lines(again, "live: ")) == 2, again.stderr
    assert server.registry("iris").active_version() == version
    assert server.registry("diabetes").active_version() != diabetes[0]


def test_a_push_creating_a_new_model_serves_it(server, checkout, tmp_path):
    """progression/ is new here: refused until its data is stored, then created and live."""
    path, label = write_table(tmp_path, "regression")
    train_table_bundle(parse_table_file(path, label), TrainingConfig(epochs=5),
                       tmp_path / "bundle")
    (checkout / "progression").mkdir()
    pushes.copy_bundle(tmp_path / "bundle", checkout / "progression")
    before = {name: server.state(name) for name in ("diabetes", "iris")}
    refused = server.push(checkout, "a new model")
    assert refused.returncode != 0
    assert lines(refused, "refused: model progression: this server stores no data to judge "
                 "progression on: store it first (`modelserve data import FILE --name "
                 "progression` on the server)"), refused.stderr
    assert not Catalog(server.home / "registry", "diabetes").exists("progression")

    stored = run_cli("data", "import", path, "--label", label, "--name", "progression",
                     home=server.home)
    assert stored.returncode == 0, stored.stderr
    result = git("push", "origin", "HEAD:master", cwd=checkout, check=False,
                 env=server.client.git_env())
    assert result.returncode == 0, result.stderr
    version = read_manifest(checkout / "progression")["version"]
    accepted = lines(result, "accepted ")
    assert len(accepted) == 1 and "for progression (a new model here) in " in accepted[0]
    assert re.search(r"RMSE [\d.]+ on this server's \d+ evaluation rows$", accepted[0].strip())
    assert lines(result, f"live: {version} (progression, new model); RMSE "), result.stderr
    assert server.registry("progression").active_version() == version
    event = last_event(server, "progression")
    assert (event["action"], event["source"]) == ("activate", f"git push {head(checkout)[:12]}")
    assert {name: server.state(name) for name in ("diabetes", "iris")} == before


def test_a_push_without_a_model_folder_leaves_that_model_served(server, checkout, shared_data):
    """Removing iris/ from the repository deploys nothing and retires nothing: it says so."""
    pushes.copy_seed(shared_data, "development", checkout)
    renamed_copy(server.iris, checkout / "iris", "iris, before its folder goes")
    assert server.push(checkout, "iris in the repository").returncode == 0
    before = {name: server.state(name) for name in ("diabetes", "iris")}
    shutil.rmtree(checkout / "iris")
    result = server.push(checkout, "iris moves elsewhere")
    assert result.returncode == 0, result.stderr
    assert lines(result, "no model changed; nothing to deploy"), result.stderr
    assert lines(result, "iris: no longer in the repository; still served as it was "
                 "(`modelserve models retire iris` on the server stops serving it)")
    assert {name: server.state(name) for name in ("diabetes", "iris")} == before
