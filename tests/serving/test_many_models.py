"""Three models of three tasks on one stack: each answers as itself, one swaps alone.

diabetes (binary, the Pima seeds: two versions) is the home's default model, where a
one-model home keeps it; iris (multiclass) and progression (regression) are models/<name>.
Every answer under load is checked against its own model and version, computed here.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import run_cli
from faults.conftest import wait_for_answers

from modelserve.model.runtime import ModelRuntime
from modelserve.registry.catalog import Catalog
from serving.conftest import prepare_home, version_of_seed
from serving.stack_helpers import BoundedLoad, RunningStack, post_json, start_stack
from serving.task_stack import TaskStack, check_here

CLIENTS = 64
ROWS_PER_MODEL = 16
SERVED_WITHIN = 2.0  # the bound: added or activated, then served, with no restart
TASK_OF = {"iris": "multiclass", "progression": "regression"}
OWN = "progression"  # the model given its own queue and worker


@dataclass
class ManyModels:
    """A home with the three models, and what each version must answer for each row."""

    home: Path
    rows: dict[str, np.ndarray]  # model name -> (ROWS_PER_MODEL, its features)
    expected: dict[str, np.ndarray]  # version -> its outputs for its model's rows
    versions: dict[str, str]  # iris, progression, production, development

    def allowed(self, name: str) -> set[str]:
        """The versions an answer of a model may come from during the test."""
        if name == "diabetes":
            return {self.versions["production"], self.versions["development"]}
        return {self.versions[name]}


def _expected(catalog: Catalog, name: str, version: str, rows: np.ndarray) -> np.ndarray:
    """A version's outputs for rows, as a worker computes them (its checked plan)."""
    path = catalog.registry(name).get(version).path
    return ModelRuntime.load(path, trust_cached_plan=True).score(rows).outputs


@pytest.fixture(scope="module")
def many_models(tmp_path_factory, shared_data: Path, pima_csv: Path,
                task_models: TaskStack) -> ManyModels:
    """diabetes with both seeds (production live), iris live, progression stored but not
    added yet (the test adds it while the stack runs)."""
    root = tmp_path_factory.mktemp("many")
    home = root / "home"
    prepare_home(home, shared_data, pima_csv, ("production", "development"))
    versions = {seed: version_of_seed(home, seed) for seed in ("production", "development")}
    assert run_cli("models", "activate", versions["production"], home=home).returncode == 0
    catalog = Catalog(home / "registry", checker=check_here)
    for name, task in TASK_OF.items():
        # The session's task models, copied in as a user's bundle would be (listed files only).
        stored = task_models.home / "registry" / "versions" / task_models.versions[task]
        bundle = root / f"bundle-{name}"
        shutil.copytree(stored, bundle, ignore=shutil.ignore_patterns("plan.npz"))
        versions[name] = task_models.versions[task]
        if name == "iris":
            catalog.registry_for_new(name).add(bundle, source="test")
            catalog.registry(name).activate(versions[name], source="test")
    generator = np.random.default_rng(15)
    rows = {"diabetes": generator.uniform(0, 150, (ROWS_PER_MODEL, 8)).astype(np.float32)}
    for name, task in TASK_OF.items():
        width = len(task_models.spec(task).feature_names)
        rows[name] = generator.normal(0, 1, (ROWS_PER_MODEL, width)).astype(np.float32)
    expected = {versions[seed]: _expected(catalog, "diabetes", versions[seed], rows["diabetes"])
                for seed in ("production", "development")}
    expected[versions["iris"]] = _expected(catalog, "iris", versions["iris"], rows["iris"])
    return ManyModels(home, rows, expected, versions)


def answered(body: dict) -> np.ndarray:
    """The one row's outputs in an answer: [p] binary, [p per class] multiclass, [v] regression."""
    if "values" in body:
        return np.asarray(body["values"], dtype=np.float64)
    probabilities = np.asarray(body["probabilities"], dtype=np.float64)
    return probabilities.reshape(-1)


def is_right(models: ManyModels, name: str, row: int, body: dict) -> bool:
    """An answer from an allowed version of its own model, equal to that version's outputs."""
    version = body.get("model_version")
    if body.get("model_name") not in (name, None) or version not in models.allowed(name):
        return False
    want = models.expected[version][row]
    return bool(np.allclose(answered(body), want, rtol=1e-4, atol=1e-5))


def ask(models: ManyModels):
    """The load's requests: thread n asks model n % 3, rows in turn."""
    names = ("diabetes", "iris", "progression")
    turns = Counter[int]()

    def request(number: int) -> tuple[str, dict, object]:
        name = names[number % len(names)]
        row = turns[number] % ROWS_PER_MODEL
        turns[number] += 1
        body = {"rows": [models.rows[name][row].tolist()]}
        return f"/api/v1/models/{name}/predict", body, (name, row)

    return request


def wait_served(stack: RunningStack, name: str, row: list[float], version: str,
                timeout: float = 60) -> float:
    """Seconds until a model's answers come from `version` (polling, 20 ms apart)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        answer = post_json(f"{stack.url}/api/v1/models/{name}/predict", {"rows": [row]})
        if answer.status == 200 and answer.json().get("model_version") == version:
            return time.monotonic() - started
        time.sleep(0.02)
    raise AssertionError(f"{name} {version} not served within {timeout} s:\n{stack.log()}")


def switch_under_load(stack: RunningStack, load: BoundedLoad, target: str, *command: str,
                      timeout: float = 60) -> None:
    """Run a models command; wait until 20 answers in a row of diabetes come from `target`."""
    result = run_cli(*command, home=stack.home)
    assert result.returncode == 0, result.stderr
    changed_at = time.monotonic()
    while time.monotonic() - changed_at < timeout:
        later = [a for a in load.snapshot() if a.started > changed_at and a.status == 200
                 and a.asked[0] == "diabetes"]
        if len(later) >= 20 and all(a.body["model_version"] == target for a in later[-20:]):
            return
        time.sleep(0.1)
    raise AssertionError(f"{target} not served within {timeout} s")


@pytest.mark.slow
def test_three_models_answer_as_themselves_and_one_swaps_alone(many_models: ManyModels,
                                                                reliability, browser) -> None:
    """64 clients over three models; diabetes is swapped and rolled back meanwhile; a model
    added while the stack runs is served within 2 s."""
    models = many_models
    production, development = models.versions["production"], models.versions["development"]
    # progression has a queue and a worker of its own; the two others share two workers.
    stack = start_stack(models.home, "--workers", "2", env={"MODELSERVE_OWN_QUEUES": OWN})
    try:
        stack.wait_ready(workers=2)
        own_worker = _worker_for(OWN)
        added_in = _add_progression(models, stack)
        with BoundedLoad(stack.url, threads=CLIENTS, seconds=120, request_timeout=30,
                         request=ask(models)) as load:
            wait_for_answers(load, 300)
            switch_under_load(stack, load, development, "models", "activate", "diabetes",
                              development)
            switch_under_load(stack, load, production, "models", "rollback", "diabetes")
            wait_for_answers(load, 300)
        _pages_in_a_browser(browser, stack, models)
    finally:
        assert stack.stop() == 0
    answers = load.answers
    failed = [a for a in answers if a.status != 200]
    wrong = [a for a in answers if a.status == 200 and not is_right(models, *a.asked, a.body)]
    served = Counter((a.asked[0], a.body["model_version"]) for a in answers if a.status == 200)
    reliability.record(
        "Faults", "three models under load, one swapped and rolled back",
        note=f"{CLIENTS} clients over diabetes, iris and progression, 2 workers; "
             f"progression added while serving, answered {added_in:.2f} s after activation",
        sent=len(answers), correct=len(answers) - len(failed) - len(wrong), wrong=len(wrong),
        failed=len(failed),
        **{"answers per model and version": ", ".join(
            f"{name} {version[:8]} {count}" for (name, version), count in sorted(served.items()))},
    )
    assert not failed, failed[:5]
    assert not wrong, wrong[:5]
    assert {name for name, _ in served} == {"diabetes", "iris", "progression"}
    assert {version for name, version in served if name == "diabetes"} == {production,
                                                                           development}
    assert added_in <= SERVED_WITHIN, f"progression served {added_in:.2f} s after activation"
    by_worker = {(a.asked[0] == OWN, a.body["worker"].endswith(f":{own_worker}"))
                 for a in answers if a.status == 200}
    assert by_worker == {(True, True), (False, False)}, "the own queue's worker serves it alone"


def _pages_in_a_browser(browser, stack: RunningStack, models: ManyModels) -> None:
    """Chromium: / lists the three models with their live versions; iris's own page has its
    form, whose answer comes from iris's version."""
    context = browser.new_context(base_url=stack.url)
    context.set_default_timeout(20_000)
    try:
        page = context.new_page()
        page.goto("/")
        listed = page.eval_on_selector_all(
            "#model-list tbody tr", "rows => rows.map(r => [r.dataset.model, "
            "r.querySelector('.version').innerText.trim()])")
        versions = models.versions
        assert listed == [["diabetes", versions["production"]], ["iris", versions["iris"]],
                          ["progression", versions["progression"]]]
        page.click("#model-list tr[data-model=iris] td.name a")
        names = page.eval_on_selector_all("#predict-form input:not([type=hidden])",
                                          "els => els.map(e => e.name)")
        assert len(names) == models.rows["iris"].shape[1]
        for name, value in zip(names, models.rows["iris"][0].tolist(), strict=True):
            page.fill(f"#predict-form input[name={name}]", repr(value))
        with page.expect_response(lambda r: r.request.method == "POST") as answer:
            page.click("#predict-form button[type=submit]")
        assert answer.value.status == 200
        assert page.inner_text("#answer-version").strip() == versions["iris"]
    finally:
        context.close()


def _worker_for(model: str) -> int:
    """The pid of the worker `up` started for a model's own queue (`worker --models NAME`)."""
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"worker" in argv and b"--models" in argv and model.encode() in argv:
            return int(entry.name)
    raise AssertionError(f"no worker for {model}'s own queue is running")


def _add_progression(models: ManyModels, stack: RunningStack) -> float:
    """Add and activate the regression model while the stack runs; seconds until it answers."""
    catalog = Catalog(models.home / "registry", checker=check_here)
    version = models.versions["progression"]
    catalog.registry_for_new("progression").add(models.home.parent / "bundle-progression",
                                                source="test")
    models.expected[version] = _expected(catalog, "progression", version,
                                         models.rows["progression"])
    catalog.registry("progression").activate(version, source="test")
    return wait_served(stack, "progression", models.rows["progression"][0].tolist(), version)
