"""Rollout records on disk, policy options, and the canary's share of requests."""

from __future__ import annotations

import os
import random

import pytest

from modelserve.rollout import control, routing
from modelserve.rollout.options import Planned, planned_rollout
from modelserve.rollout.state import (
    MAX_FILE_BYTES,
    Mode,
    Policy,
    Rollout,
    RolloutError,
    RolloutStore,
)

CANARY = Rollout("diabetes", "b" * 12, "a" * 12, Mode.CANARY, 10, 1_800_000_000.0, "cli",
                 Policy(min_requests=50))


def test_a_rollout_survives_the_file(tmp_path):
    """Written, read back equal (policy included), cleared; no file is no rollout."""
    store = RolloutStore(tmp_path)
    assert store.read() is None
    store.write(CANARY)
    assert store.read() == CANARY
    store.clear()
    assert store.read() is None
    store.clear()  # clearing nothing is fine


@pytest.mark.parametrize("content", [
    b"", b"[]", b"{}", b"\xff\xfe", b'{"model": "m"}', b"x" * (MAX_FILE_BYTES + 1),
    CANARY.to_json().replace('"canary"', '"blue-green"').encode(),
    CANARY.to_json().replace('"percent": 10', '"percent": 101').encode(),
    CANARY.to_json().replace('"min_requests": 50', '"min_requests": -1').encode(),
    CANARY.to_json().replace('"min_requests": 50', '"min_requests": "many"').encode(),
    CANARY.to_json().replace('"min_requests": 50', '"min_requests": NaN').encode(),
    CANARY.to_json().replace('"min_requests": 50', '"extra": 1').encode(),
])
def test_a_damaged_file_is_one_line(tmp_path, content):
    """Whatever the file holds, reading it answers a rollout or one RolloutError line."""
    store = RolloutStore(tmp_path)
    store.path.write_bytes(content)
    with pytest.raises(RolloutError) as refused:
        store.read()
    assert "\n" not in str(refused.value)


def test_policy_options_are_checked():
    """name=value options set a policy over the defaults; unknown or bad ones are refused."""
    policy = Policy.from_options({"min-requests": "10", "max_hours": "0.5"})
    assert (policy.min_requests, policy.max_hours, policy.min_labelled) == (10, 0.5, 50)
    for options, words in (({"min_requests": "1.5"}, "must be a number"),
                           ({"max_hours": "0"}, "above 0"),
                           ({"speed": "1"}, "unknown policy setting 'speed'"),
                           ({"max_latency_ratio": "inf"}, "0 or more")):
        with pytest.raises(RolloutError, match=words):
            Policy.from_options(options)


def test_a_canary_takes_its_share_and_keys_stick():
    """10%: about a tenth of draws and of keys; one key always lands on the same side."""
    draws = random.Random(7)  # noqa: S311 - a reproducible draw, not a secret
    taken = sum(routing.chosen(10, None, draws.random()) for _ in range(20_000))
    assert 1_800 < taken < 2_200
    keys = [f"client-{i}" for i in range(20_000)]
    assert 1_800 < sum(routing.chosen(10, key, 0.0) for key in keys) < 2_200
    assert all(routing.chosen(10, key, 0.99) == routing.chosen(10, key, 0.0) for key in keys)
    assert {routing.bucket_of("client-1")} == {routing.bucket_of("client-1") for _ in range(3)}
    assert not routing.chosen(0.01, None, 0.5) and routing.chosen(100, "any", 0.0)


def test_push_options_ask_for_a_rollout():
    """-o shadow / shadow=N / canary=N with policy.* settings; anything else one line."""
    assert planned_rollout({}) is None and planned_rollout({"reason": "x"}) is None
    assert planned_rollout({"shadow": ""}) == Planned(Mode.SHADOW, 100.0)
    planned = planned_rollout({"canary": "10", "policy.min_requests": "30"})
    assert planned == Planned(Mode.CANARY, 10.0, Policy(min_requests=30))
    assert Planned.from_note(planned.to_note()) == planned
    for options, words in (({"shadow": "", "canary": "5"}, "not both"),
                           ({"canary": ""}, "needs its share"),
                           ({"canary": "ten"}, "must be a percent"),
                           ({"shadow": "0"}, "above 0"),
                           ({"policy.min_requests": "5"}, "go with -o shadow"),
                           ({"shadow": "", "policy.speed": "1"}, "unknown policy setting")):
        with pytest.raises(RolloutError, match=words):
            planned_rollout(options)


def test_one_process_of_a_home_judges_at_a_time(tmp_path):
    """The judge's lock: taken once; free again when its holder lets go (or ends)."""
    first = control.judge_lock(tmp_path)
    assert first is not None and control.judge_lock(tmp_path) is None
    os.close(first)
    second = control.judge_lock(tmp_path)
    assert second is not None
    os.close(second)
