"""plan.npz crosses from the sandbox to the serving account: only a well-formed chain loads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from modelserve.model.plan import Plan, PlanError, Step

RNG = np.random.default_rng(7)


def _plan() -> Plan:
    """normalize(8) -> dense 8x4 relu -> dense 4x1 sigmoid."""
    return Plan((
        Step("normalize", (RNG.random(8, np.float32), RNG.random(8, np.float32) + 1)),
        Step("dense", (RNG.random((8, 4), np.float32), RNG.random(4, np.float32)), "relu"),
        Step("dense", (RNG.random((4, 1), np.float32), RNG.random(1, np.float32)), "sigmoid"),
    ), "ab" * 32)


def test_a_rescale_step_scales_to_the_targets_units(tmp_path: Path) -> None:
    """x * scale + offset after the last dense step: a regression model's Rescaling."""
    base = _plan()
    plan = Plan((*base.steps, Step("rescale", (np.float32(60.0), np.float32(150.0)))),
                base.source_sha256)
    plan.save(tmp_path / "plan.npz")
    rows = RNG.random((5, 8), np.float32)
    np.testing.assert_allclose(Plan.load(tmp_path / "plan.npz")(rows), base(rows) * 60 + 150,
                               rtol=1e-6)
    spec, arrays = _parts(plan)
    arrays["s3_0"] = np.ones(2, np.float32)
    with pytest.raises(PlanError, match="two scalars"):
        Plan.load(_write(tmp_path / "bad.npz", spec, arrays))


def _write(path: Path, spec: object, arrays: dict[str, np.ndarray]) -> Path:
    """A plan file with any spec and arrays, as a sandboxed job could write one."""
    with path.open("wb") as stream:
        np.savez(stream, spec=np.array(json.dumps(spec)), **arrays)
    return path


def _parts(plan: Plan) -> tuple[dict, dict[str, np.ndarray]]:
    """What save() writes: the spec and the arrays by name."""
    spec = {"format": "modelserve.plan/1", "source_sha256": plan.source_sha256,
            "steps": [{"kind": s.kind, "activation": s.activation} for s in plan.steps]}
    arrays = {f"s{i}_{j}": a for i, s in enumerate(plan.steps) for j, a in enumerate(s.arrays)}
    return spec, arrays


def test_a_saved_plan_loads_and_computes_the_same(tmp_path: Path) -> None:
    """save() then load() gives the same function and the width of its rows."""
    plan = _plan()
    plan.save(tmp_path / "plan.npz")
    loaded = Plan.load(tmp_path / "plan.npz")
    rows = RNG.random((5, 8), np.float32)
    assert loaded.input_width == 8
    np.testing.assert_array_equal(loaded(rows), plan(rows))


@pytest.mark.parametrize("damage, expected", [
    (lambda spec, arrays: spec["steps"][1].update(activation="exec"), "unknown activation"),
    (lambda spec, arrays: spec["steps"][0].update(kind="eval"), "unknown kind"),
    (lambda spec, arrays: arrays.update(s1_0=arrays["s1_0"].astype(np.float64)), "float32"),
    (lambda spec, arrays: arrays.update(s2_0=RNG.random((5, 1), np.float32)), "takes 5 values"),
    (lambda spec, arrays: arrays.update(s1_1=RNG.random(3, np.float32)), "matching bias"),
    (lambda spec, arrays: arrays.update(s0_1=RNG.random(7, np.float32)), "equal 1-D"),
    (lambda spec, arrays: spec.update(steps=[]), "1 to 64 steps"),
    (lambda spec, arrays: spec.update(source_sha256=None), "no source hash"),
    (lambda spec, arrays: spec.update(format="pickle"), "not a modelserve.plan/1"),
])
def test_a_plan_that_is_not_well_formed_is_refused(tmp_path: Path, damage, expected: str) -> None:
    """Any step the platform would not write is refused before the plan can run."""
    spec, arrays = _parts(_plan())
    damage(spec, arrays)
    with pytest.raises(PlanError, match=expected):
        Plan.load(_write(tmp_path / "plan.npz", spec, arrays))


def test_plan_agreement_is_judged_relative_to_the_outputs_scale():
    """Probabilities: 1e-5 absolute; a regression's values near 430: 1e-5 of 430 (float32)."""
    from modelserve.model.runtime import plan_matches

    rows = np.zeros((3, 2), np.float32)

    def keras_like(values):
        return lambda _rows, training=False: np.asarray(values, np.float32)

    def plan(offset, values):
        return lambda _rows: np.asarray(values, np.float32) + np.float32(offset)

    probabilities = [[0.5], [0.25], [0.75]]
    assert plan_matches(plan(5e-6, probabilities), keras_like(probabilities), rows)
    assert not plan_matches(plan(5e-5, probabilities), keras_like(probabilities), rows)
    values = [[430.0], [4.5], [150.0]]  # the small one carries the offset's rounding too
    assert plan_matches(plan(6e-5, values), keras_like(values), rows)
    assert not plan_matches(plan(1e-2, values), keras_like(values), rows)
    assert not plan_matches(plan(0, [[np.nan], [1], [1]]), keras_like([[np.nan], [1], [1]]),
                            rows)
