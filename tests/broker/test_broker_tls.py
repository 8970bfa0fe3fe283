"""Broker traffic between hosts: TLS with verified peers, and a worker account of least privilege.

The real thing between two real hosts: RabbitMQ with a TLS listener here, a real `modelserve
worker` in a network namespace (the worker host) over amqps://, the web app over amqps:// too;
certificates made as the Ansible role makes them, the account with the role's permissions.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import amqp
import pytest
from kombu import Connection
from serving.stack_helpers import ROW, post_json

from broker.conftest import (
    WORKER_ACCOUNT,
    TlsBroker,
    default_settings,
    role_permissions,
    start_web,
    start_worker,
    wait_for_workers,
)
from broker.pki import client_identity, make_authority, server_identity
from modelserve.config import load_settings
from modelserve.worker.app import broker_connection, broker_tls

pytestmark = pytest.mark.slow

PREDICTIONS = 20
HANDSHAKE_ROUNDS = 5
REFUSED_ATTEMPTS = 2


def test_predictions_flow_over_amqps_from_a_worker_host_with_its_own_account(
        tls_broker: TlsBroker, model_home, reliability):
    """A worker on another host, reaching the broker by TLS only, answers the web app's
    requests; the broker sees it as its own account on a TLS connection from that host."""
    web, url = start_web(tls_broker, model_home)
    worker = start_worker(tls_broker, model_home, tls_broker.worker, "w1")
    try:
        wait_for_workers(url, 1, web)
        answers = [post_json(f"{url}/api/v1/predict", {"rows": [ROW]}, 30)
                   for _ in range(PREDICTIONS)]
        assert [a.status for a in answers] == [200] * PREDICTIONS, answers[0].body
        served_by = {a.json()["worker"].split(":")[1] for a in answers}
        assert served_by == {str(worker.process.pid)}, (served_by, worker.log())
        connections = tls_broker.connections()
        mine = [c for c in connections if c["user"] == WORKER_ACCOUNT]
        assert mine and all(c["ssl"] == "true" and c["peer"] == tls_broker.host.address
                            and c["protocol"] in ("tlsv1.2", "tlsv1.3") for c in mine), connections
        # The web app's own connections are TLS as well (amqps:// from web/predictors.py).
        assert all(c["ssl"] == "true" for c in connections), connections
    finally:
        worker.stop()
        web.stop()
    reliability.record(
        "Security", "predictions over amqps from a worker host",
        "a real worker in another network namespace, own account, client certificate from the "
        "role's CA; the web app over amqps too",
        predictions=PREDICTIONS, answered=sum(a.status == 200 for a in answers),
        tls_connections=len(connections), protocol=mine[0]["protocol"])


def test_the_broker_refuses_peers_without_a_certificate_from_its_ca(
        tls_broker: TlsBroker, tmp_path, reliability):
    """From the worker host: our certificate is taken; another CA's, none, a broker
    certificate we do not trust or that names another host, and the plain port are refused."""
    stranger = make_authority(tmp_path / "other-ca", "another CA")
    foreign = client_identity(stranger, tmp_path / "foreign", WORKER_ACCOUNT)
    base = {"address": tls_broker.tls.address, "port": tls_broker.tls.port,
            "name": tls_broker.tls.address, "ca": str(tls_broker.authority.cert),
            "cert": str(tls_broker.worker.cert), "key": str(tls_broker.worker.key)}
    cases = {
        "our certificate": base,
        "another CA's certificate": {**base, "cert": str(foreign.cert), "key": str(foreign.key)},
        "no certificate": {**base, "cert": None},
        "a broker we do not trust": {**base, "ca": str(stranger.cert)},
        "a broker named otherwise": {**base, "name": "broker.example.org"},
    }
    outcomes = {name: [] for name in cases}
    for _ in range(HANDSHAKE_ROUNDS):
        for name, result in zip(cases, tls_broker.handshakes(list(cases.values())), strict=True):
            outcomes[name].append(result)
    assert outcomes["our certificate"] == ["ok"] * HANDSHAKE_ROUNDS, outcomes
    refused = {name: results for name, results in outcomes.items() if name != "our certificate"}
    assert all("ok" not in results for results in refused.values()), refused
    plain = [{"address": tls_broker.tls.address, "port": tls_broker.node.port},
             {"address": "127.0.0.1", "port": tls_broker.node.port}]
    plain_outcomes = tls_broker.handshakes(plain)
    assert all(result.startswith("ConnectionRefusedError") for result in plain_outcomes), \
        plain_outcomes
    reliability.record(
        "Security", "broker TLS handshakes from a worker host",
        "verify_peer + fail_if_no_peer_cert; the client checks the broker's CA and name; "
        "the plain port listens on loopback only",
        accepted=sum(r == "ok" for r in outcomes["our certificate"]),
        refused=sum(len(results) for results in refused.values()),
        refused_kinds=len(refused), plain_port_reachable=plain_outcomes.count("ok"))


def test_a_real_worker_with_another_cas_certificate_never_takes_a_task(
        tls_broker: TlsBroker, model_home, tmp_path, reliability):
    """`modelserve worker` with a certificate the broker's CA did not sign keeps being refused:
    it never consumes the queue, and its log says why."""
    stranger = make_authority(tmp_path / "other-ca", "another CA")
    foreign = client_identity(stranger, tmp_path / "foreign", WORKER_ACCOUNT)
    worker = start_worker(tls_broker, model_home, foreign, "foreign")
    started = time.monotonic()
    try:
        while worker.log().count("Cannot connect") < REFUSED_ATTEMPTS:
            assert time.monotonic() - started < 60, worker.log()
            assert worker.process.poll() is None, worker.log()
            time.sleep(0.5)
        assert "unknown ca" in worker.log().lower(), worker.log()
        assert not [c for c in tls_broker.connections() if c["user"] == WORKER_ACCOUNT]
        assert "ready." not in worker.log()
    finally:
        worker.stop()
    reliability.record(
        "Security", "a real worker with another CA's certificate",
        "`modelserve worker` on the worker host, right account and password, foreign certificate",
        connection_attempts_refused=REFUSED_ATTEMPTS, tasks_taken=0,
        seconds_watched=f"{time.monotonic() - started:.1f} s")


def _refused(broker: TlsBroker, operation, vhost: str = "/") -> bool:
    """Run one AMQP operation as the worker host's account; tell whether the broker refused it."""
    connection = amqp.Connection(
        f"{broker.tls.address}:{broker.tls.port}", userid=WORKER_ACCOUNT,
        password=broker.password, virtual_host=vhost, ssl=_account_tls(broker),
        connect_timeout=5, confirm_publish=True)  # a refused publish fails in basic_publish
    try:
        connection.connect()
        operation(connection.channel())
        return False
    except (amqp.exceptions.AccessRefused, amqp.exceptions.NotAllowed):
        return True
    finally:
        connection.collect()


def _account_tls(broker: TlsBroker) -> dict:
    """The worker host's TLS options, as modelserve makes them from its settings."""
    settings = load_settings(broker.worker_env(broker.worker, broker.folder))
    options = broker_tls(settings)
    assert isinstance(options, dict)
    return options


def test_the_worker_account_can_do_what_a_worker_needs_and_nothing_else(
        tls_broker: TlsBroker, reliability):
    """As the worker host's account: the prediction queue and answers through the default
    exchange work; other queues, exchanges and virtual hosts are refused."""
    queue = default_settings().queue
    admin = Connection(tls_broker.node.url(), connect_timeout=5)
    with admin:
        channel = admin.channel()
        channel.queue_declare("modelserve.other", durable=True, auto_delete=False)
        channel.basic_publish(amqp.Message("secret"), exchange="", routing_key="modelserve.other")
        channel.queue_declare(queue, durable=True, auto_delete=False)
    allowed = {
        "declare the prediction queue": lambda ch: ch.queue_declare(queue, durable=True,
                                                                    auto_delete=False),
        "consume the prediction queue": lambda ch: ch.basic_consume(queue),
        "answer through the default exchange": lambda ch: ch.basic_publish(
            amqp.Message("{}"), exchange="", routing_key="modelserve.reply.nobody"),
    }
    denied = {
        "declare another queue": lambda ch: ch.queue_declare("modelserve.mine"),
        "read another queue": lambda ch: ch.basic_get("modelserve.other"),
        "consume another queue": lambda ch: ch.basic_consume("modelserve.other"),
        "purge another queue": lambda ch: ch.queue_purge("modelserve.other"),
        "delete another queue": lambda ch: ch.queue_delete("modelserve.other"),
        "bind another queue": lambda ch: ch.queue_bind("modelserve.other", queue, "x"),
        "declare an exchange": lambda ch: ch.exchange_declare("modelserve.fanout", "fanout"),
        "publish to amq.fanout": lambda ch: ch.basic_publish(amqp.Message("x"), "amq.fanout"),
        "read through amq.direct": lambda ch: ch.queue_bind(queue, "amq.direct", "stolen"),
    }
    results = {name: _refused(tls_broker, op) for name, op in {**allowed, **denied}.items()}
    assert not any(results[name] for name in allowed), results
    assert [name for name in denied if not results[name]] == [], results
    with Connection(tls_broker.node.url(), connect_timeout=5) as admin:
        kept = admin.channel().queue_declare("modelserve.other", passive=True).message_count
    assert kept == 1  # nothing read, purged or deleted
    tls_broker.ctl("add_vhost", "elsewhere")
    assert _refused(tls_broker, lambda ch: ch.queue_declare(queue), vhost="elsewhere")
    configure, write, read = role_permissions()
    reliability.record(
        "Security", "a worker host's broker account",
        f"configure {configure}, write {write}, read {read}: found with a real worker",
        allowed=len(allowed), denied=sum(results[name] for name in denied) + 1,
        attempted_denials=len(denied) + 1)


@pytest.mark.parametrize("server", ["named otherwise", "from another CA"])
def test_modelserve_refuses_a_broker_it_cannot_verify(tmp_path, server):
    """The worker's own connection (broker_connection, py-amqp) checks the broker's certificate
    against MODELSERVE_BROKER_CA and the URL's host: a listener with a certificate for another
    name, or from another CA, is refused in the handshake, before any credentials are sent."""
    ours = make_authority(tmp_path / "ca")
    signer = ours if server == "named otherwise" else make_authority(tmp_path / "other", "other")
    names = ["broker.example.org"] if server == "named otherwise" else ["127.0.0.1"]
    identity = server_identity(signer, tmp_path / "server", names)
    client = client_identity(ours, tmp_path / "client", WORKER_ACCOUNT)
    with tls_listener(identity) as (port, received):
        settings = load_settings({
            "MODELSERVE_HOME": str(tmp_path),
            "MODELSERVE_BROKER_URL": f"amqps://u:p@127.0.0.1:{port}/v",
            "MODELSERVE_BROKER_CA": str(ours.cert), "MODELSERVE_BROKER_CERT": str(client.cert),
            "MODELSERVE_BROKER_KEY": str(client.key)})
        with pytest.raises(ssl.SSLCertVerificationError) as refused:
            broker_connection(settings, connect_timeout=5).connect()
    assert ("mismatch" if server == "named otherwise" else "unable to get local issuer") \
        in str(refused.value)
    assert received == []  # not one byte of AMQP (nor the password) reached the listener


@contextmanager
def tls_listener(identity) -> Iterator[tuple[int, list[bytes]]]:
    """A TLS server on loopback with this certificate; yields its port and what it received."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(identity.cert, identity.key)
    received: list[bytes] = []
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        """Take connections (kombu tries twice); keep what arrives after a good handshake."""
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return  # closed: the test is over
            try:
                with context.wrap_socket(connection, server_side=True) as tls:
                    data = tls.recv(64)
                    if data:
                        received.append(data)
            except (OSError, ssl.SSLError):
                continue  # the client refused us: what the test wants

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], received
    finally:
        server.shutdown(socket.SHUT_RDWR)  # wakes the accept
        server.close()
        thread.join(10)
