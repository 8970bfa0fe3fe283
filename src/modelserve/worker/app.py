"""The Celery application: durable queue, publisher confirms, late acks, redelivery."""

from __future__ import annotations

import ssl
from pathlib import Path
from urllib.parse import urlsplit

from celery import Celery
from kombu import Connection, Queue

from modelserve.config import Settings
from modelserve.errors import UserError
from modelserve.worker.protocol import PREDICT_TASK

__all__ = ["PREDICT_TASK", "broker_connection", "make_celery", "queue_for", "task_queue",
           "worker_queues"]
TLS_SCHEME = "amqps"


def broker_tls(settings: Settings) -> dict | bool:
    """TLS options for the broker connections (py-amqp's), or False for plain amqp://.

    An amqps:// connection always verifies the broker's certificate and that it names the
    URL's host; MODELSERVE_BROKER_CA names the CA to trust (else the system's), and
    MODELSERVE_BROKER_CERT/KEY the client certificate a broker with verify_peer requires.
    """
    url = urlsplit(settings.broker_url)
    files = {"MODELSERVE_BROKER_CA": settings.broker_ca,
             "MODELSERVE_BROKER_CERT": settings.broker_cert,
             "MODELSERVE_BROKER_KEY": settings.broker_key}
    if url.scheme != TLS_SCHEME:
        named = [name for name, value in files.items() if value]
        if named:
            raise UserError(f"{', '.join(named)} need an amqps:// MODELSERVE_BROKER_URL")
        return False
    if bool(settings.broker_cert) != bool(settings.broker_key):
        raise UserError("set both MODELSERVE_BROKER_CERT and MODELSERVE_BROKER_KEY, or neither")
    for name, value in files.items():
        if value and not Path(value).is_file():
            raise UserError(f"{name}={value}: no such file")
    return {
        "cert_reqs": ssl.CERT_REQUIRED,
        "ca_certs": settings.broker_ca or None,
        "certfile": settings.broker_cert or None,
        "keyfile": settings.broker_key or None,
        # py-amqp checks the certificate's names against server_hostname when it is set.
        "server_hostname": url.hostname,
        "tls_minimum_version": ssl.TLSVersion.TLSv1_2,
    }


def queue_for(settings: Settings, model: str) -> str:
    """The queue a model's batches go to: its own (MODELSERVE_OWN_QUEUES), else the shared one."""
    return f"{settings.queue}.{model}" if model in settings.own_queue_models else settings.queue


def task_queue(name: str) -> Queue:
    """A prediction queue as workers and the web app declare it (alike, or the broker refuses)."""
    return Queue(name, durable=True, routing_key=name)


def broker_connection(settings: Settings, **options) -> Connection:
    """A kombu connection to the settings' broker, over TLS for an amqps:// URL."""
    return Connection(settings.broker_url, ssl=broker_tls(settings), **options)


def worker_queues(settings: Settings, models: tuple[str, ...] = ()) -> list[str]:
    """The queues a worker consumes: the models' own queues (`worker --models`), else the
    shared one."""
    return [f"{settings.queue}.{model}" for model in models] or [settings.queue]


def celery_config(settings: Settings, models: tuple[str, ...] = ()) -> dict:
    """Celery settings that make the queue path safe (nothing lost, nothing hangs)."""
    queues = [task_queue(name) for name in worker_queues(settings, models)]
    return {
        "broker_url": settings.broker_url,
        "broker_use_ssl": broker_tls(settings),
        "broker_connection_timeout": 2.0,
        "broker_connection_retry_on_startup": True,
        # Wait for RabbitMQ to confirm each publish: a message we report as sent is stored.
        "broker_transport_options": {"confirm_publish": True},
        "task_queues": queues,
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
        # No broadcast commands (`celery control shutdown` to every worker): nothing uses them,
        # and without them a worker declares only the prediction queue, which lets a worker
        # host's broker account be limited to it (the Ansible rabbitmq role's grants).
        "worker_enable_remote_control": False,
    }


def make_celery(settings: Settings, models: tuple[str, ...] = ()) -> Celery:
    """Build the Celery app for these settings, with the prediction task registered."""
    app = Celery("modelserve", set_as_current=False)
    app.conf.update(celery_config(settings, models))
    from modelserve.worker.tasks import register_tasks

    register_tasks(app, settings, models)
    return app
