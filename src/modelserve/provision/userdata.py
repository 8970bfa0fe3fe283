"""Render the #cloud-config user-data of a production or development server."""

from __future__ import annotations

import re
import shlex
import urllib.parse
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path

import jinja2

from modelserve import __version__
from modelserve.config import Settings, load_settings
from modelserve.delivery.access import KEY_TYPES
from modelserve.errors import UserError
from modelserve.tls import CERT_FILE, KEY_FILE, self_signed_request

ROLES = ("prod", "dev")
ADMIN_USER = "ops"
PROD_ACCOUNT = "deploy"  # serves and receives pushes; the dev remote is deploy@PROD
DEV_ACCOUNT = "dev"
VENV = "/opt/modelserve"
COMPOSE_DIR = "/opt/modelserve/compose"
WEB_PORT = 5100
DEFAULT_PACKAGE = f"modelserve=={__version__}"
# Printed on the server's console, where `cloud up` reads them through the compute API.
READY_MARKER = "modelserve-cloud-init-done"
KEY_MARKER = "modelserve-deploy-key:"
TLS_MARKER = "modelserve-tls-sha256:"
# The lock of this modelserve, written to the server: pip installs with it as constraints.
CONSTRAINTS = "/etc/modelserve/requirements.lock"


@dataclass(frozen=True)
class UserData:
    """What a rendering needs: the role and the values the template inserts."""

    role: str
    ssh_key: str
    containers: bool = False
    package: str = DEFAULT_PACKAGE
    find_links: str = ""
    no_index: bool = False
    production_host: str = ""
    deploy_key: str = ""
    dataset_url: str = ""
    web_port: int = WEB_PORT
    compose_file: str = ""
    tls: bool = True  # prod (native): HTTPS with a certificate made on the server at boot
    tls_names: tuple[str, ...] = ()  # more names for it (a DNS name clients will use)
    # prod: the stack's MODELSERVE_* settings (MODELSERVE_OWN_QUEUES=iris, say), as given
    settings: tuple[str, ...] = ()


# Settings the server makes itself (its home, its own broker) are not the operator's to give.
_OWN_SETTINGS = ("home", "broker_url", "broker_ca", "broker_cert", "broker_key")
# Plain enough for a systemd Environment= line and a shell word, unquoted: names, numbers,
# comma lists, `600/minute`.
_SETTING_VALUE = re.compile(r"[A-Za-z0-9_.,:/+-]*")


def stack_settings(given: tuple[str, ...]) -> list[tuple[str, str]]:
    """The MODELSERVE_NAME=VALUE settings for the stack, each checked as modelserve reads it."""
    if not given:
        return []
    # Here, not at the top: the registry's modules bring numpy, which rendering never needs.
    from modelserve.registry.catalog import check_name

    known = {f"MODELSERVE_{field.name.upper()}" for field in fields(Settings)
             if field.name not in _OWN_SETTINGS}
    pairs = []
    for text in given:
        name, _, value = text.partition("=")
        if name not in known:
            raise UserError(f"--setting {text!r}: not NAME=VALUE with one of "
                            f"{', '.join(sorted(known))}")
        if not _SETTING_VALUE.fullmatch(value):
            raise UserError(f"--setting {text!r}: use letters, digits and _ . , : / + - only")
        try:
            settings = load_settings({"MODELSERVE_HOME": "/", name: value})  # a bad number
            for model in [value] if name == "MODELSERVE_MODEL_NAME" else sorted(
                    settings.own_queue_models):
                check_name(model)
        except UserError as error:
            raise UserError(f"--setting {text!r}: {error}") from None
        pairs.append((name, value))
    return pairs


def public_key(text: str, what: str) -> str:
    """Return one OpenSSH public key line, or refuse anything else."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    parts = lines[0].split() if len(lines) == 1 else []
    if len(parts) < 2 or parts[0] not in KEY_TYPES:
        raise UserError(f"{what}: not one OpenSSH public key (expected `ssh-ed25519 AAAA... name`)")
    return " ".join(parts[:3])


def host_address(text: str) -> str:
    """Return a host name or IP address, or refuse what could not be one."""
    if text and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.:-]*", text):
        raise UserError(f"--production-host {text!r}: not a host name or IP address")
    return text


def pip_options(find_links: str, no_index: bool) -> list[str]:
    """pip's options for where the packages come from: a wheel mirror and/or no index."""
    if no_index and not find_links:
        raise UserError("--no-index needs --find-links URL|DIR: pip would have nowhere to look")
    if find_links.startswith("-") or any(char.isspace() for char in find_links):
        raise UserError(f"--find-links {find_links!r}: not a URL or directory")
    options = ["--find-links", find_links] if find_links else []
    if find_links.startswith("http://"):
        # pip ignores a plain-HTTP mirror unless told to trust its host: the operator named it.
        options += ["--trusted-host", urllib.parse.urlsplit(find_links).hostname or ""]
    return options + (["--no-index"] if no_index else [])


def template_name(role: str, containers: bool) -> str:
    """The template file of a role."""
    if role not in ROLES:
        raise UserError(f"unknown role {role!r}: choose one of {', '.join(ROLES)}")
    if containers and role != "prod":
        raise UserError("--containers is for --role prod (the development server runs no stack)")
    return "prod-containers.yaml.j2" if containers else f"{role}.yaml.j2"


def _environment() -> jinja2.Environment:
    """Templates from the package; undefined names are errors, not empty strings."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("modelserve.provision", "templates"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 (YAML, not HTML: values go through tojson)
    )


def _compose_source(spec: str) -> tuple[str | None, str]:
    """A compose file to embed (a local path) or to download at boot (an http(s) URL)."""
    if not spec:
        raise UserError("--containers needs --compose-file PATH|URL (the stack's compose.yaml)")
    if spec.startswith(("http://", "https://")):
        return None, spec
    path = Path(spec)
    if not path.is_file():
        raise UserError(f"--compose-file {spec}: no such file")
    return path.read_text(), ""


def _tls(data: UserData) -> dict[str, object]:
    """The template's TLS values: on for a native production server unless turned off."""
    folder = f"{_account(data.role)['modelserve_home']}/tls"
    tls = data.tls and data.role == "prod" and not data.containers
    return {"tls": tls, "tls_cert": f"{folder}/{CERT_FILE}", "tls_key": f"{folder}/{KEY_FILE}",
            "tls_script": tls_script(VENV, folder, data.tls_names) if tls else "",
            "web_scheme": "https" if tls else "http"}


def _account(role: str) -> dict[str, str]:
    """The role's main account, its home and registry."""
    name = PROD_ACCOUNT if role == "prod" else DEV_ACCOUNT
    home = f"/home/{name}"
    return {"account": name, "account_home": home,
            "modelserve_home": f"{home}/.local/share/modelserve"}


def lock_text() -> str:
    """The requirements lock this modelserve was tested with (package data)."""
    return (resources.files("modelserve") / "requirements.lock").read_text()


def tls_script(venv: str, folder: str, names: tuple[str, ...]) -> str:
    """The shell line making the server's certificate for its host name and addresses.

    Made on the server: its key never travels in user-data (which Nova stores and the
    metadata service hands to any process of the VM). `cloud up` pins it by the fingerprint
    the server prints on its console.
    """
    self_signed_request(["localhost", *names], [])  # refuse a malformed --tls-name here
    extra = "".join(f" --name {shlex.quote(name)}" for name in names)
    return (f"exec {venv}/bin/modelserve tls self-signed --out {shlex.quote(folder)} "
            f'--name "$(hostname)"{extra} $(for a in $(hostname -I); do echo --ip "$a"; done)')


def render(data: UserData) -> str:
    """Render the #cloud-config document for a role."""
    name = template_name(data.role, data.containers)
    compose_text, compose_url = _compose_source(data.compose_file) if data.containers else (
        None, "")
    ssh_key = public_key(data.ssh_key, "--ssh-key")
    if data.settings and data.role != "prod":
        raise UserError("--setting is for --role prod (the development server runs no stack)")
    context = {
        **_account(data.role),
        "role": data.role,
        "admin_user": ADMIN_USER,
        "ssh_key": ssh_key,
        # The operator may log in as the training account on dev; on prod the account only
        # receives pushes, through the restricted key `delivery authorize` writes.
        "account_keys": [ssh_key] if data.role == "dev" else [],
        "account_gecos": "modelserve service and git-push delivery" if data.role == "prod"
        else "modelserve training",
        "deploy_key": public_key(data.deploy_key, "--deploy-key") if data.deploy_key else "",
        "package": data.package,
        "pip_options": pip_options(data.find_links, data.no_index),
        "dataset_url": data.dataset_url,
        "production_host": host_address(data.production_host),
        "production_account": PROD_ACCOUNT,
        "web_port": data.web_port,
        "venv": VENV,
        "compose_dir": COMPOSE_DIR,
        "compose_text": compose_text,
        "compose_url": compose_url,
        "ready_marker": READY_MARKER,
        "key_marker": KEY_MARKER,
        "tls_marker": TLS_MARKER,
        "constraints": CONSTRAINTS,
        "settings": stack_settings(data.settings),
        "lock": lock_text(),
        **_tls(data),
    }
    return _environment().get_template(name).render(context)
