"""`modelserve cloud up/down` against the fake OpenStack: what is sent, what is created and
deleted, and one clear line for each way a cloud refuses."""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from modelserve.tls import fingerprint, make_self_signed, self_signed_request

from .fake_openstack import FLAVOR, IMAGE, PASSWORD, PRIVATE, PROJECT, USER, FakeOpenStack

pytestmark = pytest.mark.slow  # a modelserve cloud run or more per case, on a fake OpenStack: ~40 s

# The operator's own network (documentation ranges): `up` opens SSH and the web port to it only.
ALLOW = ["--allow-from", "198.51.100.7/32", "--allow-from", "2001:db8::/64"]
FAST = [*ALLOW, "--poll-seconds", "0.02", "--active-timeout", "10"]


@pytest.fixture
def fake() -> FakeOpenStack:
    """A fresh fake cloud per test."""
    cloud = FakeOpenStack().start()
    yield cloud
    cloud.stop()


@pytest.fixture
def os_env(fake: FakeOpenStack) -> dict[str, str]:
    """The OS_* variables an RC file sets, pointing at the fake."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env.update(OS_AUTH_URL=f"{fake.url}/v3", OS_USERNAME=USER, OS_PASSWORD=PASSWORD,
               OS_PROJECT_NAME=PROJECT, OS_USER_DOMAIN_NAME="Default",
               OS_PROJECT_DOMAIN_NAME="Default", OS_REGION_NAME="RegionOne",
               OS_IDENTITY_API_VERSION="3")
    return env


@pytest.fixture(scope="module")
def ssh_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The operator's public key."""
    path = tmp_path_factory.mktemp("key") / "operator"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "operator@test", "-f",
                    str(path)], check=True)
    return path.with_suffix(".pub")


class _Ready(BaseHTTPRequestHandler):
    """A stand-in for a freshly booted stack: /v2/health/ready says 503, no model yet."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        """Answer like modelserve's readiness endpoint does before the first push."""
        body = json.dumps({"ready": False, "active_version": None, "workers": 2}).encode()
        self.send_response(503 if self.path == "/v2/health/ready" else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        """Quiet."""


@pytest.fixture
def stack_port() -> int:
    """A tiny HTTP responder on a free port of 127.0.0.1 (the fake's floating IP)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ready)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_port
    server.shutdown()


@pytest.fixture(scope="module")
def server_cert(tmp_path_factory: pytest.TempPathFactory):
    """A certificate as the production server makes it at boot (its name, not 127.0.0.1's
    only: the floating IP is not in it)."""
    folder = tmp_path_factory.mktemp("server-tls")
    return make_self_signed(self_signed_request(["modelserve-prod"], ["10.0.0.5"]), folder)


@pytest.fixture
def tls_stack_port(server_cert) -> int:
    """The readiness responder over HTTPS with the server's certificate."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ready)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(server_cert.cert, server_cert.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_port
    server.shutdown()


def console_says_fingerprint(fake: FakeOpenStack, value: str) -> None:
    """The server's console shows cloud-init printing its certificate's fingerprint."""
    fake.behaviour.console_lines = [
        'modelserve-tls-sha256: $(/opt/modelserve/bin/modelserve tls fingerprint ...)"',
        f"modelserve-tls-sha256: {value}"]


def cli(home: Path, env: dict[str, str], *args: str | Path) -> subprocess.CompletedProcess:
    """Run the real `modelserve` command line with the given environment."""
    return subprocess.run([sys.executable, "-m", "modelserve", *map(str, args)],
                          env=dict(env, MODELSERVE_HOME=str(home)), capture_output=True,
                          text=True, timeout=120, check=False)


def sent_user_data(fake: FakeOpenStack) -> str:
    """The user-data of the one server create, decoded as cloud-init will decode it."""
    (create,) = [c for c in fake.requests("POST", "/servers") if c.path.endswith("/servers")]
    return base64.b64decode(create.body["server"]["user_data"]).decode()


def assert_nothing_left(fake: FakeOpenStack, home: Path) -> None:
    """No server, group, rule owner, floating IP or keypair exists, and no record either."""
    assert fake.servers == {} and fake.security_groups == {} and fake.floating_ips == {}
    assert fake.keypairs == {}
    assert list((home / "cloud").glob("deployments/*.json")) == []


def test_prod_up_sends_the_rendered_user_data_and_down_deletes_it_all(
        tmp_path: Path, fake: FakeOpenStack, os_env: dict, ssh_key: Path, tls_stack_port: int,
        server_cert, reliability):
    """up: keypair, a group opening 22 and the web port to --allow-from only, the server with
    exactly the rendered user-data, a floating IP, the inventory; it waits on https with the
    certificate whose fingerprint the console shows; down: all of it goes, again a no-op."""
    stack_port = tls_stack_port
    console_says_fingerprint(fake, fingerprint(server_cert.cert.read_text()))
    shape = ["--role", "prod", "--ssh-key", ssh_key, "--web-port", str(stack_port)]
    up = cli(tmp_path, os_env, "cloud", "up", *shape, "--image", "debian-12", "--flavor",
             "m1.small", "--ready-timeout", "10", *FAST)
    assert up.returncode == 0, up.stderr
    assert "server: ACTIVE" in up.stdout and "floating IP: 127.0.0.1" in up.stdout
    assert f"stack answers: https://127.0.0.1:{stack_port}/" in up.stdout
    assert "models: none yet" in up.stdout
    pinned = tmp_path / "cloud" / "certificates" / "modelserve-prod.crt"
    assert pinned.read_text() == server_cert.cert.read_text()
    assert f"curl --cacert {pinned}" in up.stdout

    rendered = cli(tmp_path, os_env, "cloud", "user-data", *shape)
    assert sent_user_data(fake) == rendered.stdout
    server = fake.requests("POST", "/servers")[0].body["server"]  # the first POST: the create
    assert server["imageRef"] == IMAGE["id"] and server["flavorRef"] == FLAVOR["id"]
    assert server["networks"] == [{"uuid": PRIVATE["id"]}]
    assert server["key_name"] == "modelserve-prod"
    assert server["metadata"] == {"modelserve": "modelserve-prod", "modelserve_role": "prod"}
    assert server["security_groups"] == [{"name": "modelserve-prod"}]
    (pair,) = fake.requests("POST", "/os-keypairs")
    assert pair.body["keypair"]["public_key"] == ssh_key.read_text().strip()
    rules = [c.body["security_group_rule"] for c in fake.requests("POST", "security-group-rules")]
    opened = sorted((r["port_range_min"], r["remote_ip_prefix"], r["ethertype"]) for r in rules)
    assert opened == sorted([(22, "198.51.100.7/32", "IPv4"), (22, "2001:db8::/64", "IPv6"),
                             (stack_port, "198.51.100.7/32", "IPv4"),
                             (stack_port, "2001:db8::/64", "IPv6")])
    assert all(r["direction"] == "ingress" and r["protocol"] == "tcp"
               and r["port_range_min"] == r["port_range_max"] for r in rules)
    assert len(fake.rules) == 4  # the fake holds these and no others
    reliability.record("Security", "cloud up: security group", "the rules `cloud up` created, "
                       "as the fake OpenStack recorded them", rules=len(rules),
                       ports="22, web", world_open_rules=sum(
                           r["remote_ip_prefix"] in ("0.0.0.0/0", "::/0") for r in rules))
    tagged = [c.body["tags"] for c in fake.requests("PUT", "/tags")]
    assert tagged == [["modelserve", "modelserve:modelserve-prod"]] * 2  # group and floating IP

    inventory = yaml.safe_load((tmp_path / "cloud" / "inventory.yml").read_text())
    hosts = inventory["all"]["children"]["production"]["hosts"]
    assert hosts == {"modelserve-prod": {"ansible_host": "127.0.0.1", "ansible_user": "ops",
                                         "modelserve_containers": False}}

    down = cli(tmp_path, os_env, "cloud", "down")
    assert down.returncode == 0, down.stderr
    assert "modelserve-prod: deleted" in down.stdout
    assert_nothing_left(fake, tmp_path)
    assert not pinned.exists()
    inventory = yaml.safe_load((tmp_path / "cloud" / "inventory.yml").read_text())
    assert inventory["all"]["children"]["production"]["hosts"] == {}

    deletes = len([c for c in fake.calls if c.method == "DELETE"])
    again = cli(tmp_path, os_env, "cloud", "down", "--name", "modelserve-prod")
    assert again.returncode == 0, again.stderr
    assert "nothing to delete" in again.stdout
    assert len([c for c in fake.calls if c.method == "DELETE"]) == deletes


def test_dev_up_waits_for_cloud_init_and_shows_the_deploy_key(
        tmp_path: Path, fake: FakeOpenStack, os_env: dict, ssh_key: Path):
    """dev: the console's final message ends the wait; its deploy key is printed to authorize."""
    result = cli(tmp_path, os_env, "cloud", "up", "--role", "dev", "--ssh-key", ssh_key,
                 "--production-host", "203.0.113.9", "--image", IMAGE["id"], "--flavor", "2",
                 "--network", "private", "--ready-timeout", "10", *FAST)
    assert result.returncode == 0, result.stderr
    assert "cloud-init finished" in result.stdout
    assert "deploy key: ssh-ed25519 AAAAC3NzaDEVKEY" in result.stdout
    assert "| ssh ops@203.0.113.9 sudo -u deploy -H" in result.stdout
    assert "deploy@203.0.113.9" in sent_user_data(fake)
    assert fake.requests("POST", "/action")  # the console was read through Nova
    inventory = yaml.safe_load((tmp_path / "cloud" / "inventory.yml").read_text())
    assert "modelserve-dev" in inventory["all"]["children"]["development"]["hosts"]


def test_clouds_yaml_and_a_reused_keypair(tmp_path: Path, fake: FakeOpenStack, os_env: dict,
                                          ssh_key: Path):
    """--cloud reads clouds.yaml; down uses the recorded cloud and keeps a keypair it found."""
    config = tmp_path / "clouds.yaml"
    config.write_text(yaml.safe_dump({"clouds": {"fake": {
        "auth": {"auth_url": f"{fake.url}/v3", "username": USER, "password": PASSWORD,
                 "project_name": PROJECT, "user_domain_name": "Default",
                 "project_domain_name": "Default"},
        "region_name": "RegionOne", "identity_api_version": 3}}}))
    env = {k: v for k, v in os_env.items() if not k.startswith("OS_")}
    env["OS_CLIENT_CONFIG_FILE"] = str(config)
    fake.keypairs["mine"] = {"name": "mine", "public_key": ssh_key.read_text().strip(),
                             "fingerprint": "aa", "type": "ssh"}
    up = cli(tmp_path, env, "cloud", "up", "--cloud", "fake", "--role", "prod", "--ssh-key",
             ssh_key, "--key-name", "mine", "--image", "debian-12", "--flavor", "m1.small",
             "--ready-timeout", "0", "--name", "web1", *FAST)
    assert up.returncode == 0, up.stderr
    assert "keypair: reusing mine" in up.stdout
    assert fake.requests("POST", "/os-keypairs") == []
    down = cli(tmp_path, env, "cloud", "down", "--name", "web1")
    assert down.returncode == 0, down.stderr
    assert fake.keypairs.keys() == {"mine"} and fake.servers == {}
    assert fake.requests("DELETE", "/os-keypairs") == []


def test_down_finds_what_up_created_by_its_tags_when_the_record_is_lost(
        tmp_path: Path, fake: FakeOpenStack, os_env: dict, ssh_key: Path):
    """The server by its metadata, the group and floating IP by their tags."""
    up = cli(tmp_path, os_env, "cloud", "up", "--role", "prod", "--ssh-key", ssh_key,
             "--image", "debian-12", "--flavor", "m1.small", "--ready-timeout", "0", *FAST)
    assert up.returncode == 0, up.stderr
    (tmp_path / "cloud" / "deployments" / "modelserve-prod.json").unlink()
    down = cli(tmp_path, os_env, "cloud", "down", "--name", "modelserve-prod")
    assert down.returncode == 0, down.stderr
    assert fake.servers == {} and fake.security_groups == {} and fake.floating_ips == {}
    # The keypair is named by the record only; without it, ours is indistinguishable.
    assert list(fake.keypairs) == ["modelserve-prod"]


def test_up_refuses_a_deployment_that_exists(tmp_path: Path, fake: FakeOpenStack,
                                             os_env: dict, ssh_key: Path):
    """A second up of one name creates nothing and says how to get rid of the first."""
    args = ["cloud", "up", "--role", "prod", "--ssh-key", ssh_key, "--image", "debian-12",
            "--flavor", "m1.small", "--ready-timeout", "0", *FAST]
    assert cli(tmp_path, os_env, *args).returncode == 0
    again = cli(tmp_path, os_env, *args)
    assert again.returncode == 1
    assert "exists" in again.stderr and "cloud down --name modelserve-prod" in again.stderr
    assert len(fake.requests("POST", "/servers")) == 1


def test_a_stack_that_never_answers_is_reported_and_the_server_kept(
        tmp_path: Path, fake: FakeOpenStack, os_env: dict, ssh_key: Path, stack_port: int):
    """Readiness times out: one line, the server stays for `down` (it may only be slow)."""
    result = cli(tmp_path, os_env, "cloud", "up", "--role", "prod", "--ssh-key", ssh_key,
                 "--image", "debian-12", "--flavor", "m1.small", "--web-port", "1",
                 "--ready-timeout", "0.3", "--no-tls", *FAST)
    assert result.returncode == 1
    assert "did not answer at http://127.0.0.1:1/v2/health/ready" in result.stderr
    assert len(fake.servers) == 1
    assert (tmp_path / "cloud" / "deployments" / "modelserve-prod.json").is_file()


def _bad_password(env: dict, fake: FakeOpenStack) -> None:
    """An RC file with a wrong password."""
    env["OS_PASSWORD"] = PASSWORD + "-wrong"


def _quota(status: int):
    """Nova refusing the server for quota, with 403 (current) or 413 (older releases)."""
    def setup(env: dict, fake: FakeOpenStack) -> None:
        fake.behaviour.quota_status = status
    return setup


def _server_error(env: dict, fake: FakeOpenStack) -> None:
    """The scheduler finds no host: the server goes into ERROR."""
    fake.behaviour.server_outcome = "ERROR"


def _unreachable(env: dict, fake: FakeOpenStack) -> None:
    """An RC file naming an address where nothing listens (the fake's port, once stopped)."""
    fake.stop()


@pytest.mark.parametrize(("setup", "args", "message"), [
    (_unreachable, [], "cannot reach OpenStack: Unable to establish connection to http://127"),
    (_bad_password, [], "OpenStack refused the credentials (401)"),
    (None, ["--image", "no-such-image"], "image 'no-such-image' not found (see --image)"),
    (None, ["--flavor", "m9.huge"], "flavor 'm9.huge' not found (see --flavor)"),
    (None, ["--network", "nowhere"], "network 'nowhere' not found (see --network)"),
    (_quota(403), [], "the project's quota is exhausted (403): Quota exceeded for instances"),
    (_quota(413), [], "the project's quota is exhausted (413): Quota exceeded for instances"),
    (_server_error, [], "the server went into ERROR: No valid host was found"),
], ids=["unreachable", "401", "image", "flavor", "network", "quota-403", "quota-413",
       "server-error"])
def test_refusals_leave_nothing_behind(tmp_path: Path, fake: FakeOpenStack, os_env: dict,
                                       ssh_key: Path, setup, args: list[str], message: str):
    """Each failure: exit 1, one `Error:` line, and everything this run created is deleted."""
    if setup is not None:
        setup(os_env, fake)
    defaults = {"--image": "debian-12", "--flavor": "m1.small"}
    for option, value in defaults.items():
        if option not in args:
            args = [*args, option, value]
    result = cli(tmp_path, os_env, "cloud", "up", "--role", "prod", "--ssh-key", ssh_key,
                 "--ready-timeout", "0", *args, *FAST)
    assert result.returncode == 1, result.stdout
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert_nothing_left(fake, tmp_path)


def test_user_data_over_novas_limit_is_refused_before_anything_is_created(
        tmp_path: Path, fake: FakeOpenStack, os_env: dict, ssh_key: Path):
    """An embedded compose file too large for Nova: one line, no request that creates."""
    compose = tmp_path / "compose.yaml"
    compose.write_text("# padding\n" * 6000)
    result = cli(tmp_path, os_env, "cloud", "up", "--role", "prod", "--containers",
                 "--compose-file", compose, "--ssh-key", ssh_key, "--image", "debian-12",
                 "--flavor", "m1.small", *FAST)
    assert result.returncode == 1
    assert "over Nova's 65535: fetch the compose file by URL" in result.stderr
    assert [c for c in fake.calls if c.method in ("POST", "PUT", "DELETE")
            and "/auth/" not in c.path] == []


def test_a_server_whose_certificate_is_not_the_one_on_its_console_is_not_trusted(
        tmp_path: Path, fake: FakeOpenStack, os_env: dict, ssh_key: Path, tls_stack_port: int):
    """Someone else answers at the address (another certificate): one line, nothing pinned."""
    console_says_fingerprint(fake, ":".join(["AB"] * 32))
    result = cli(tmp_path, os_env, "cloud", "up", "--role", "prod", "--ssh-key", ssh_key,
                 "--image", "debian-12", "--flavor", "m1.small", "--web-port",
                 str(tls_stack_port), "--ready-timeout", "10", *FAST)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "not trusting it" in result.stderr and "AB:AB:AB" in result.stderr
    assert not (tmp_path / "cloud" / "certificates" / "modelserve-prod.crt").exists()
    assert "stack answers" not in result.stdout


def test_plain_http_does_not_count_as_the_https_stack(
        tmp_path: Path, fake: FakeOpenStack, os_env: dict, ssh_key: Path, stack_port: int,
        server_cert):
    """A plain-HTTP answer on the web port is no TLS server: `up` keeps waiting, then says so."""
    console_says_fingerprint(fake, fingerprint(server_cert.cert.read_text()))
    result = cli(tmp_path, os_env, "cloud", "up", "--role", "prod", "--ssh-key", ssh_key,
                 "--image", "debian-12", "--flavor", "m1.small", "--web-port", str(stack_port),
                 "--ready-timeout", "1", *FAST)
    assert result.returncode == 1
    assert f"nothing answered with TLS at 127.0.0.1:{stack_port}" in result.stderr


@pytest.mark.parametrize(("allow", "message"), [
    ([], "--allow-from CIDR is required"),
    (["--allow-from", "everyone"], "--allow-from 'everyone': not an address or CIDR"),
])
def test_up_needs_allow_from_and_creates_nothing_without_it(
        tmp_path: Path, fake: FakeOpenStack, os_env: dict, ssh_key: Path, allow: list[str],
        message: str):
    """No world-open default: without a valid --allow-from nothing is asked of the cloud."""
    result = cli(tmp_path, os_env, "cloud", "up", "--role", "prod", "--ssh-key", ssh_key,
                 "--image", "debian-12", "--flavor", "m1.small", "--ready-timeout", "0", *allow)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert fake.calls == []
