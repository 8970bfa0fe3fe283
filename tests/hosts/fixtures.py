"""Fresh hosts on the session's engine (tests/conftest.py): the image, a network, a key pair,
hosts started by name, and the production and development hosts booted from user-data.

A plugin (tests/conftest.py lists it), not a conftest: tests outside tests/hosts (the sandbox's
systemd test) share the session's network, key and mirror instead of importing copies of these
fixtures, which would make a second network and remove the first one's hosts.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from containers.engine import CACHE, Engine, ensure_base_images

from hosts.booting import DATASET, Booted, UserDataBoots, render
from hosts.image import ensure_host_image
from hosts.mirror import serve, stage_mirror
from hosts.testhost import (
    CLOUD_INIT_DISABLED,
    TestHost,
    add_admin,
    create_host,
    create_network,
    gateway,
    make_key,
    put_files,
    remove_leftovers,
    start_host,
    wait_booted,
    wait_ssh,
)

# The fixtures of the hosts booted from user-data, by role.
USER_DATA_FIXTURES = {"prod": "prod_from_user_data", "dev": "dev_from_user_data"}
# The production address the dev user-data names (a documentation address: no host there).
DEV_PRODUCTION_HOST = "203.0.113.7"


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
    """Start fresh hosts by name for Ansible: systemd up, ops reachable over SSH (cloud-init
    off, ops added as a cloud image's user-data would); removed after the test."""
    prefix = f"msh{secrets.token_hex(3)}"
    made: list[str] = []

    def start(name: str) -> TestHost:
        """Start a host and wait until ops logs in."""
        started = time.monotonic()
        container = create_host(engine, host_image, host_network, name, prefix)
        made.append(container)
        put_files(engine, container, {CLOUD_INIT_DISABLED: ""})
        host = start_host(engine, container, name, host_key)
        wait_booted(host)
        add_admin(host)
        wait_ssh(host)
        print(f"\nhost {name} ({host.address}) up in {time.monotonic() - started:.1f} s")
        return host

    try:
        yield start
    finally:
        if made:
            engine.docker("rm", "-f", "-v", *made)


def start_together(start: HostFactory, *names: str) -> list[TestHost]:
    """Start several fresh hosts at once (each mostly waits on its own boot); in order."""
    with ThreadPoolExecutor(len(names)) as pool:
        return list(pool.map(start, names))


@pytest.fixture(scope="session")
def mirror(engine: Engine, host_network: str, shared_data: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The wheel and dataset mirror, on this machine's address in the hosts' network."""
    folder = stage_mirror(CACHE, tmp_path_factory.mktemp("mirror"),
                          {DATASET: shared_data / DATASET})
    with serve(folder, gateway(engine, host_network)) as url:
        yield url


@pytest.fixture(scope="session")
def user_data_boots(request: pytest.FixtureRequest, engine: Engine, host_image: str,
                    host_network: str, host_key: Path, mirror: str,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[UserDataBoots]:
    """The session's hosts booted from user-data: every role some selected test needs starts
    booting at once (cloud-init in one host while the other waits on pip), each host is made
    once for the session; removed at its end."""
    boots = UserDataBoots(engine, host_image, host_network, host_key)
    wanted = [role for role, fixture in USER_DATA_FIXTURES.items()
              if any(fixture in item.fixturenames for item in request.session.items)]
    try:
        for role in wanted:
            extra = ("--production-host", DEV_PRODUCTION_HOST) if role == "dev" else ()
            home = tmp_path_factory.mktemp(f"user-data-{role}")
            boots.start(role, render(home, role, host_key, mirror, *extra), alongside=wanted)
        yield boots
    finally:
        boots.remove()


@pytest.fixture
def prod_from_user_data(user_data_boots: UserDataBoots) -> Booted:
    """The production host cloud-init made from `cloud user-data --role prod` (shared)."""
    return user_data_boots.ready("prod")


@pytest.fixture
def dev_from_user_data(user_data_boots: UserDataBoots) -> Booted:
    """The development host cloud-init made from `cloud user-data --role dev` (shared)."""
    return user_data_boots.ready("dev")
