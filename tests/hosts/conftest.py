"""Fresh hosts on the session's engine (tests/conftest.py): the image, a network, a key pair."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from containers.engine import CACHE, Engine, ensure_base_images

from hosts.image import ensure_host_image
from hosts.testhost import (
    CLOUD_INIT_DISABLED,
    TestHost,
    add_admin,
    create_host,
    create_network,
    make_key,
    nocloud_seed,
    put_files,
    remove_leftovers,
    start_host,
    wait_booted,
    wait_cloud_init,
    wait_ssh,
)


@pytest.fixture(scope="session")
def host_image(engine: Engine) -> str:
    """The host image's tag (built once per content hash, then cached in the engine)."""
    started = time.monotonic()
    base, _ = ensure_base_images(engine, CACHE)
    tag = ensure_host_image(engine, base, CACHE)
    print(f"\nhost image {tag} ready in {time.monotonic() - started:.0f} s")
    return tag


@pytest.fixture(scope="session")
def host_network(engine: Engine) -> Iterator[str]:
    """A bridge network of the session's hosts, removed with them at the end."""
    remove_leftovers(engine)
    name = create_network(engine, f"mshosts-{secrets.token_hex(3)}")
    try:
        yield name
    finally:
        remove_leftovers(engine)


@pytest.fixture(scope="session")
def host_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's SSH key pair (the private key's path; .pub beside it)."""
    return make_key(tmp_path_factory.mktemp("ssh"))


HostFactory = Callable[..., TestHost]


@pytest.fixture
def fresh_host(engine: Engine, host_image: str, host_network: str, host_key: Path
               ) -> Iterator[HostFactory]:
    """Start fresh hosts by name: systemd up, ops reachable over SSH; removed after the test.

    `fresh_host(name)` is a host for Ansible; `fresh_host(name, user_data=TEXT)` boots through
    cloud-init's NoCloud source and returns once cloud-init has finished.
    """
    prefix = f"msh{secrets.token_hex(3)}"
    made: list[str] = []

    def start(name: str, user_data: str | None = None) -> TestHost:
        """Start a host: for Ansible (cloud-init off, ops added), or booting from user-data."""
        started = time.monotonic()
        container = create_host(engine, host_image, host_network, name, prefix)
        made.append(container)
        seed = nocloud_seed(name, user_data) if user_data else {CLOUD_INIT_DISABLED: ""}
        put_files(engine, container, seed)
        host = start_host(engine, container, name, host_key)
        if user_data:
            wait_cloud_init(host)  # the user-data makes ops, with the key it names
        wait_booted(host)
        if not user_data:
            add_admin(host)
        wait_ssh(host)
        print(f"\nhost {name} ({host.address}) up in {time.monotonic() - started:.1f} s")
        return host

    try:
        yield start
    finally:
        if made:
            engine.docker("rm", "-f", "-v", *made)
