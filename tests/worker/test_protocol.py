"""The hand-built task message is the one Celery's own client builds, and a worker reads it."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from celery import Celery
from celery.app.amqp import AMQP

from modelserve.config import Settings
from modelserve.worker import protocol
from modelserve.worker.app import make_celery

NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def app(tmp_path_factory) -> Celery:
    """The web app's and the workers' Celery configuration, with the task registered."""
    return make_celery(Settings(home=tmp_path_factory.mktemp("home")))


def celery_message(app: Celery, expires: datetime):
    """What Celery's send_task would publish for the same batch."""
    amqp: AMQP = app.amqp
    return amqp.as_task_v2("b1", protocol.PREDICT_TASK, args=["AAAA", 8],
                           kwargs={"model": "iris"}, argsrepr="[<3 rows>]", expires=expires,
                           reply_to="modelserve.reply.x", correlation_id="b1")


def test_the_message_is_celery_s_own_but_for_where_it_comes_from(app: Celery):
    ours = protocol.predict_message("b1", "AAAA", 8, "iris", "modelserve.reply.x", 2.5, 3,
                                    now=NOW)
    theirs = celery_message(app, datetime(2026, 12, 1, 12, 0, 2, 500000, tzinfo=UTC))
    assert ours.headers == {**theirs.headers, "origin": protocol.ORIGIN}
    assert ours.properties == theirs.properties
    args, kwargs, embed = json.loads(ours.body)
    assert (tuple(args), kwargs, embed) == (tuple(theirs.body[0]), theirs.body[1],
                                            theirs.body[2])


def test_the_worker_side_reads_the_arguments_and_expiry(app: Celery):
    """Celery's worker-side message parsing gives back the task's call and deadline."""
    from celery.worker.request import Request
    from kombu.message import Message

    ours = protocol.predict_message("b2", "QUJD", 8, "diabetes", "r", 1.0, 1, now=NOW)
    message = Message(body=ours.body, headers=ours.headers,
                      properties={**ours.properties, "delivery_info": {}},
                      content_type=protocol.CONTENT_TYPE,
                      content_encoding=protocol.CONTENT_ENCODING)
    request = Request(message, app=app, task=app.tasks[protocol.PREDICT_TASK])
    assert request.args == ["QUJD", 8] and request.kwargs == {"model": "diabetes"}
    assert request.expires == datetime(2026, 12, 1, 12, 0, 1, tzinfo=UTC)
    assert request.id == "b2" and request.reply_to == "r" and request.correlation_id == "b2"
    assert request.argsrepr == "[<1 rows>]"


def test_a_candidate_s_batch_names_its_version(app: Celery):
    """A rollout's batch carries version= as Celery would; a live one carries none."""
    from celery.worker.request import Request
    from kombu.message import Message

    ours = protocol.predict_message("b3", "QUJD", 8, "diabetes", "r", 1.0, 1, now=NOW,
                                    version="c8f1d232f130")
    message = Message(body=ours.body, headers=ours.headers,
                      properties={**ours.properties, "delivery_info": {}},
                      content_type=protocol.CONTENT_TYPE,
                      content_encoding=protocol.CONTENT_ENCODING)
    request = Request(message, app=app, task=app.tasks[protocol.PREDICT_TASK])
    assert request.kwargs == {"model": "diabetes", "version": "c8f1d232f130"}
    assert "c8f1d232f130" in ours.headers["kwargsrepr"]
