"""`modelserve cloud user-data`: every rendering passes the real `cloud-init schema` and does
what its role needs (accounts, keys, commands)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cli_helpers import assert_user_error, run_cli
from cryptography import x509

from modelserve.provision.ready import marker_value
from modelserve.provision.userdata import TLS_MARKER
from modelserve.tls import fingerprint

pytestmark = pytest.mark.slow  # cloud-init (only ./dev test installs it); a CLI run per case

REPO = Path(__file__).resolve().parents[2]
PIP = "/opt/modelserve/bin/pip install --quiet --disable-pip-version-check --constraint " \
      "/etc/modelserve/requirements.lock"
TLS_DIR = "/home/deploy/.local/share/modelserve/tls"

COMPOSE = "services:\n  web:\n    image: modelserve:latest\n    ports: ['5100:5100']\n"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An operator key and a development deploy key, made by ssh-keygen."""
    folder = tmp_path_factory.mktemp("keys")
    made = {}
    for name in ("operator", "deploy"):
        path = folder / name
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{name}@test",
                        "-f", str(path)], check=True)
        made[name] = path.with_suffix(".pub")
    compose = folder / "compose.yaml"
    compose.write_text(COMPOSE)
    made["compose"] = compose
    return made


def schema_check(path: Path) -> subprocess.CompletedProcess:
    """Run cloud-init's own validator on a file."""
    cloud_init = shutil.which("cloud-init")
    assert cloud_init, "cloud-init is not installed (./dev installs the Debian package)"
    return subprocess.run([cloud_init, "schema", "--config-file", str(path)],
                          capture_output=True, text=True, check=False)


def render(tmp_path: Path, *args: str | Path) -> tuple[str, dict]:
    """Render through the real CLI, validate with cloud-init, and parse the YAML."""
    result = run_cli("cloud", "user-data", *args, home=tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert text.startswith("#cloud-config\n")
    path = tmp_path / "user-data"
    path.write_text(text)
    check = schema_check(path)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "Valid cloud-config" in check.stdout
    return text, yaml.safe_load(text)


def users(doc: dict) -> dict[str, dict]:
    """The created accounts by name (the image's default user is kept)."""
    assert doc["users"][0] == "default"
    return {user["name"]: user for user in doc["users"][1:]}


def commands(doc: dict) -> list[str]:
    """runcmd entries as single strings, for searching."""
    return [" ".join(entry) if isinstance(entry, list) else entry for entry in doc["runcmd"]]


def key_text(path: Path) -> str:
    """A public key file's line."""
    return path.read_text().strip()


def test_the_validator_refuses_a_broken_document(tmp_path: Path) -> None:
    """The schema check is real: a wrong key type is refused, so a pass means something."""
    path = tmp_path / "bad"
    path.write_text("#cloud-config\nruncmd: 5\nusers: [{name: x, sudo: [1, 2]}]\n")
    assert schema_check(path).returncode != 0


def test_prod_native(tmp_path: Path, keys: dict[str, Path]) -> None:
    """prod: the operator has sudo; deploy serves under systemd and gets the dev's push key."""
    text, doc = render(tmp_path, "--role", "prod", "--ssh-key", keys["operator"],
                       "--deploy-key", keys["deploy"], "--package", "modelserve @ https://x/m.whl")
    accounts = users(doc)
    assert accounts["ops"]["ssh_authorized_keys"] == [key_text(keys["operator"])]
    assert "NOPASSWD" in accounts["ops"]["sudo"]
    # deploy has no login key of its own: only the restricted one `delivery authorize` writes.
    assert "ssh_authorized_keys" not in accounts["deploy"]
    assert "rabbitmq-server" in doc["packages"] and "git" in doc["packages"]
    files = {item["path"]: item["content"] for item in doc["write_files"]}
    unit = files["/etc/systemd/system/modelserve.service"]
    assert "User=deploy" in unit
    assert ("ExecStart=/opt/modelserve/bin/modelserve up --host 0.0.0.0 --port 5100 "
            f"--tls-cert {TLS_DIR}/web.crt --tls-key {TLS_DIR}/web.key\n") in unit
    assert files["/etc/modelserve/development-deploy-key.pub"].strip() == key_text(keys["deploy"])
    # pip installs with the lock this modelserve was tested with, the repository's own.
    assert files["/etc/modelserve/requirements.lock"] == (REPO / "requirements.lock").read_text()
    run = commands(doc)
    assert f"{PIP} modelserve @ https://x/m.whl" in run
    # The certificate is made as deploy before the hook is told to verify the stack with it.
    made = [i for i, cmd in enumerate(run) if "modelserve tls self-signed" in cmd]
    init = [i for i, cmd in enumerate(run) if cmd.endswith(
        f"delivery init --web-url https://127.0.0.1:5100 --web-ca {TLS_DIR}/web.crt")]
    assert len(made) == 1 and len(init) == 1 and made[0] < init[0]
    assert run[made[0]].startswith("runuser -u deploy") and run[init[0]].startswith("runuser")
    assert TLS_MARKER in run[made[0] + 1]
    assert any("delivery authorize /etc/modelserve/development-deploy-key.pub" in cmd
               for cmd in run)
    assert run[-1] == "systemctl enable --now modelserve.service"
    # Fast contextualization: nothing trains and nothing upgrades at boot.
    assert not any("train" in cmd.split() for cmd in run)
    assert doc["package_upgrade"] is False


def test_prod_without_a_deploy_key_authorizes_nobody(tmp_path: Path,
                                                     keys: dict[str, Path]) -> None:
    """Without --deploy-key nothing may push yet; the rest is the same."""
    _, doc = render(tmp_path, "--role", "prod", "--ssh-key", keys["operator"],
                    "--web-port", "8080")
    assert not any("authorize" in cmd for cmd in commands(doc))
    unit = doc["write_files"][0]["content"]
    assert "--port 8080 --tls-cert" in unit


def test_prod_without_tls_serves_plain_http(tmp_path: Path, keys: dict[str, Path]) -> None:
    """--no-tls: no certificate is made and the hook reaches the stack over http."""
    _, doc = render(tmp_path, "--role", "prod", "--ssh-key", keys["operator"], "--no-tls")
    run = commands(doc)
    assert not any("tls" in cmd for cmd in run)
    assert any(cmd.endswith("delivery init --web-url http://127.0.0.1:5100") for cmd in run)
    assert "--tls-cert" not in doc["write_files"][0]["content"]


def test_the_boot_lines_make_a_certificate_for_this_host(tmp_path: Path,
                                                         keys: dict[str, Path]) -> None:
    """The rendered runcmd lines, run here for real (our modelserve instead of /opt's): a
    certificate naming the host, its addresses, --tls-name and loopback, and its fingerprint
    on the console as `cloud up` reads it."""
    _, doc = render(tmp_path, "--role", "prod", "--ssh-key", keys["operator"],
                    "--tls-name", "models.example.org")
    ours = str(Path(sys.executable).parent / "modelserve")
    folder = tmp_path / "tls"
    (made, shown) = [entry[-1] for entry in doc["runcmd"]
                     if isinstance(entry, list) and "tls" in entry[-1] and entry[-2] == "-c"]
    for line in (made, shown):
        script = line.replace("/opt/modelserve/bin/modelserve", ours).replace(
            TLS_DIR, str(folder))
        done = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
    cert = x509.load_pem_x509_certificate((folder / "web.crt").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    hostname = subprocess.run(["hostname"], capture_output=True, text=True,
                              check=True).stdout.strip()
    addresses = subprocess.run(["hostname", "-I"], capture_output=True, text=True,
                               check=True).stdout.split()
    dns = names.get_values_for_type(x509.DNSName)
    ips = {str(ip) for ip in names.get_values_for_type(x509.IPAddress)}
    assert {hostname.lower(), "models.example.org", "localhost"} <= set(dns)
    assert {*addresses, "127.0.0.1"} <= ips
    assert oct((folder / "web.key").stat().st_mode & 0o777) == "0o600"
    printed = f"{TLS_MARKER} {fingerprint((folder / 'web.crt').read_text())}"
    assert marker_value(done.stdout, TLS_MARKER) == printed.split(" ", 1)[1]


@pytest.mark.parametrize("source", ["path", "url"])
def test_prod_containers(tmp_path: Path, keys: dict[str, Path], source: str) -> None:
    """prod --containers: Docker and the compose file, workers scaled to the cores."""
    spec = str(keys["compose"]) if source == "path" else "https://example.org/compose.yaml"
    _, doc = render(tmp_path, "--role", "prod", "--containers", "--ssh-key", keys["operator"],
                    "--compose-file", spec)
    assert {"docker.io", "docker-compose"} <= set(doc["packages"])
    assert "rabbitmq-server" not in doc["packages"]
    run = commands(doc)
    if source == "path":
        assert doc["write_files"][0]["content"] == COMPOSE
    else:
        assert "write_files" not in doc
        assert any(cmd.startswith("curl -fsSL") and cmd.endswith(spec) for cmd in run)
    assert "docker-compose -f compose.yaml up -d --scale worker=$(nproc)" in run[-1]
    assert users(doc)["ops"]["ssh_authorized_keys"] == [key_text(keys["operator"])]


@pytest.mark.parametrize("production", ["203.0.113.7", ""])
def test_dev(tmp_path: Path, keys: dict[str, Path], production: str) -> None:
    """dev: a training account with a deploy key and a checkout pushing to production."""
    args = ["--production-host", production] if production else []
    _, doc = render(tmp_path, "--role", "dev", "--ssh-key", keys["operator"], *args)
    accounts = users(doc)
    assert accounts["dev"]["ssh_authorized_keys"] == [key_text(keys["operator"])]
    assert "sudo" not in accounts["dev"]
    run = commands(doc)
    assert any(cmd.endswith("/opt/modelserve/bin/modelserve delivery key") for cmd in run)
    remote = [cmd for cmd in run if "remote add" in cmd]
    if production:
        assert remote == ["runuser -u dev -- env HOME=/home/dev /opt/modelserve/bin/modelserve "
                          "delivery remote add production deploy@203.0.113.7 "
                          "--checkout /home/dev/models"]
    else:
        assert remote == []
    assert "modelserve-deploy-key:" in run[-1]
    assert "rabbitmq-server" not in doc["packages"]


@pytest.mark.parametrize("role", ["prod", "dev"])
def test_a_wheel_mirror_without_pypi(tmp_path: Path, keys: dict[str, Path], role: str) -> None:
    """--find-links/--no-index: an air-gapped cloud installs from its own wheel mirror."""
    _, doc = render(tmp_path, "--role", role, "--ssh-key", keys["operator"], "--find-links",
                    "http://10.0.0.2:8000/wheels/", "--no-index", "--package", "modelserve")
    pip = [cmd for cmd in commands(doc) if " install " in cmd]
    assert pip == [f"{PIP} --find-links http://10.0.0.2:8000/wheels/ --trusted-host 10.0.0.2 "
                   "--no-index modelserve"]
    lock = {item["path"]: item["content"] for item in doc["write_files"]}
    assert lock["/etc/modelserve/requirements.lock"] == (REPO / "requirements.lock").read_text()
    assert commands(doc)[0] == "set -e"  # a failed step fails cloud-init


@pytest.mark.parametrize(("args", "fragment"), [
    (["--role", "dev", "--containers"], "--containers is for --role prod"),
    (["--role", "prod", "--containers"], "--containers needs --compose-file"),
    (["--role", "dev", "--production-host", "x; rm -rf /"], "not a host name"),
    (["--role", "prod", "--deploy-key", "BAD"], "--deploy-key: not one OpenSSH public key"),
    (["--role", "prod", "--no-index"], "--no-index needs --find-links"),
    (["--role", "dev", "--find-links", "--pre"], "not a URL or directory"),
    (["--role", "prod", "--tls-name", "x; rm -rf /"], "--name 'x; rm -rf /': not a host name"),
])
def test_refusals(tmp_path: Path, keys: dict[str, Path], args: list[str], fragment: str) -> None:
    """Wrong combinations get one line each."""
    bad = tmp_path / "bad.pub"
    bad.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    args = [str(bad) if arg == "BAD" else arg for arg in args]
    result = run_cli("cloud", "user-data", "--ssh-key", keys["operator"], *args, home=tmp_path,
                     timeout=60)
    assert_user_error(result, fragment)


@pytest.mark.parametrize("role", ["prod", "dev"])
@pytest.mark.parametrize("url", ["", "http://10.0.0.2:8000/pima.csv"])
def test_the_dataset_comes_from_the_package_unless_a_url_is_given(
    tmp_path: Path, keys: dict[str, Path], role: str, url: str
) -> None:
    """No --dataset-url: the server stores the copy shipped in the package (no download at
    boot); with one, it fetches that URL."""
    _, doc = render(tmp_path, "--role", role, "--ssh-key", keys["operator"],
                    *(["--dataset-url", url] if url else []))
    data = [cmd for cmd in commands(doc) if "/opt/modelserve/bin/modelserve data " in cmd]
    assert len(data) == 1, data
    wanted = f"modelserve data fetch --url {url}" if url else "modelserve data example"
    assert data[0].startswith("runuser -u ") and data[0].endswith(wanted), data[0]


def test_prod_passes_the_stacks_settings_through(tmp_path: Path, keys: dict[str, Path]) -> None:
    """--setting: natively in the unit's environment; in containers in compose's, with the
    workers of the models that have a queue of their own."""
    settings = ("--setting", "MODELSERVE_OWN_QUEUES=iris,wine",
                "--setting", "MODELSERVE_MAX_LOADED_MODELS=4")
    _, doc = render(tmp_path, "--role", "prod", "--ssh-key", keys["operator"], *settings)
    unit = {item["path"]: item["content"] for item in doc["write_files"]}[
        "/etc/systemd/system/modelserve.service"]
    assert "Environment=MODELSERVE_OWN_QUEUES=iris,wine\n" in unit
    assert "Environment=MODELSERVE_MAX_LOADED_MODELS=4\n" in unit
    _, doc = render(tmp_path, "--role", "prod", "--containers", "--ssh-key", keys["operator"],
                    "--compose-file", keys["compose"], *settings)
    assert ("&& MODELSERVE_OWN_QUEUES=iris,wine MODELSERVE_MAX_LOADED_MODELS=4 docker-compose "
            "-f compose.yaml --profile own-queues up -d --scale worker=$(nproc) "
            "--scale model-worker=1") in commands(doc)[-1]


@pytest.mark.parametrize(("setting", "fragment"), [
    ("MODELSERVE_HOME=/tmp", "not NAME=VALUE"),  # the server's own
    ("MODELSERVE_MAX_LOADED_MODELS=many", "is not a valid int"),
    ("MODELSERVE_OWN_QUEUES=Iris", "not a model name"),
    ("MODELSERVE_RATE_LIMIT=1/minute;reboot", "letters, digits"),
])
def test_a_setting_the_stack_could_not_read_is_refused(tmp_path: Path, keys: dict[str, Path],
                                                       setting: str, fragment: str) -> None:
    """Each refusal is one line naming the setting, before anything is rendered."""
    result = run_cli("cloud", "user-data", "--role", "prod", "--ssh-key", keys["operator"],
                     "--setting", setting, home=tmp_path, timeout=60)
    assert_user_error(result, f"--setting {setting!r}", fragment)
    assert result.stdout == ""
