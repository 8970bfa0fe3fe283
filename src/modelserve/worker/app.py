"""The Celery application: durable queue, publisher confirms, late acks, redelivery."""

from __future__ import annotations

from celery import Celery
from kombu import Queue

from modelserve.config import Settings

PREDICT_TASK = "modelserve.predict_batch"


def celery_config(settings: Settings) -> dict:
    """Celery settings that make the queue path safe (nothing lost, nothing hangs)."""
    return {
        "broker_url": settings.broker_url,
        "broker_connection_timeout": 2.0,
        "broker_connection_retry_on_startup": True,
        # Wait for RabbitMQ to confirm each publish: a message we report as sent is stored.
        "broker_transport_options": {"confirm_publish": True},
        "task_queues": [Queue(settings.queue, durable=True, routing_key=settings.queue)],
        "task_default_queue": settings.queue,
        "task_default_routing_key": settings.queue,
        # Ack after the work is done; a worker killed mid-task has its message redelivered.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # Answers go straight to the caller's reply queue, never through a result backend.
        "task_ignore_result": True,
        "result_backend": None,
        "task_serializer": "json",
        "accept_content": ["json"],
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
    }


def make_celery(settings: Settings) -> Celery:
    """Build the Celery app for these settings, with the prediction task registered."""
    app = Celery("modelserve", set_as_current=False)
    app.conf.update(celery_config(settings))
    from modelserve.worker.tasks import register_tasks

    register_tasks(app, settings)
    return app
