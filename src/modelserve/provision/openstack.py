"""Start and delete a modelserve server on OpenStack with openstacksdk.

Everything `up` creates carries the tag `modelserve` and `modelserve:NAME` (Neutron tags) or the
metadata `modelserve: NAME` (Nova), and its id is recorded as soon as it exists; a failure in
`up` deletes what this run created, and `down` deletes what the record and the tags name.
"""

from __future__ import annotations

import base64
import ipaddress
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from modelserve.errors import UserError
from modelserve.provision.state import Deployment, StateDir

Say = Callable[[str], None]
TAG = "modelserve"
USER_DATA_LIMIT = 65535  # Nova's limit on the base64-encoded user-data
OPEN_PORTS = (22,)  # SSH; the web port is added per deployment


class CloudError(UserError):
    """OpenStack refused or failed something; the message says what, in one line."""


@dataclass(frozen=True)
class ServerSpec:
    """What `up` asks OpenStack for."""

    image: str
    flavor: str
    network: str = ""
    floating_network: str = ""
    key_name: str = ""
    public_key: str = ""
    user_data: str = ""
    web_port: int = 5100
    allow_from: tuple[str, ...] = ()  # CIDRs that may reach SSH and the web port


@dataclass(frozen=True)
class Timing:
    """How long `up` waits and how often it looks (short in tests)."""

    active_seconds: float = 600
    poll_seconds: float = 5


def allowed_sources(values: tuple[str, ...]) -> tuple[str, ...]:
    """The --allow-from CIDRs, normalized; none given is refused, not opened to the world."""
    if not values:
        raise UserError("--allow-from CIDR is required: the addresses that may reach SSH and "
                        "the web port, e.g. your own address/32 (0.0.0.0/0 opens them to all)")
    sources = []
    for value in values:
        try:
            sources.append(str(ipaddress.ip_network(value, strict=False)))
        except ValueError:
            raise UserError(f"--allow-from {value!r}: not an address or CIDR "
                            "(e.g. 198.51.100.7/32)") from None
    return tuple(dict.fromkeys(sources))


def connect(cloud: str) -> Any:
    """Connect with clouds.yaml (--cloud or OS_CLOUD) or the OS_* variables, and authenticate."""
    try:
        import openstack
    except ImportError:
        raise UserError("`modelserve cloud` needs openstacksdk: pip install "
                        "'modelserve[cloud]'") from None
    # keystoneauth logs its discovery retries; the one line we raise says what failed.
    logging.getLogger("keystoneauth").setLevel(logging.ERROR)
    with translated_errors():
        connection = openstack.connect(cloud=cloud or None)
        connection.authorize()  # fail here, on wrong credentials, before anything is looked up
        return connection


def tags(name: str) -> list[str]:
    """The tags of everything a deployment creates."""
    return [TAG, f"{TAG}:{name}"]


@contextmanager
def translated_errors() -> Iterator[None]:
    """Turn the SDK's and keystoneauth's exceptions into one clear line."""
    from keystoneauth1 import exceptions as ks
    from openstack import exceptions as sdk

    try:
        yield
    except UserError:
        raise
    except (sdk.SDKException, ks.ClientException) as error:
        raise CloudError(_explain(error)) from None


def _explain(error: Exception) -> str:
    """One line for an SDK or keystoneauth exception."""
    from keystoneauth1 import exceptions as ks
    from openstack import exceptions as sdk

    # Connection.authorize() re-raises keystoneauth's exception as a bare SDKException.
    inner = error.__context__ if (type(error) is sdk.SDKException
                                  and isinstance(error.__context__, ks.ClientException)) else error
    if isinstance(inner, ks.Unauthorized):
        return ("OpenStack refused the credentials (401): check OS_USERNAME, OS_PASSWORD, "
                "OS_PROJECT_NAME and the domains, or the clouds.yaml entry")
    if isinstance(inner, ks.ConnectFailure):
        # Its text ends in urllib3's retry story; the first clause names the URL.
        return f"cannot reach OpenStack: {str(inner).split(': ', 1)[0]}"
    if isinstance(inner, sdk.ConfigException | ks.MissingRequiredOptions | ks.NoMatchingPlugin
                  | ks.AuthorizationFailure):
        return (f"no usable OpenStack configuration ({inner}): source your project's RC file "
                "(OS_* variables) or name a clouds.yaml entry with --cloud")
    if isinstance(inner, sdk.HttpException):
        return _http_message(inner)
    return f"OpenStack: {inner}"


def _http_message(error: Any) -> str:
    """One line for an HTTP refusal, naming quota and authentication problems plainly."""
    details = (error.details or "").strip() or str(error)
    status = error.status_code
    if status == 401:
        return "OpenStack refused the credentials (401): the token was not accepted"
    if status == 413 or (status == 403 and "quota" in details.lower()):
        return f"the project's quota is exhausted ({status}): {details}"
    return f"OpenStack refused {error.method} {error.url} ({status}): {details}"


class Provisioner:
    """The steps of `cloud up` and `cloud down` on one connection."""

    def __init__(self, connection: Any, states: StateDir, say: Say, timing: Timing = Timing()):
        self.conn = connection
        self.states = states
        self.say = say
        self.timing = timing

    # -- look-ups (nothing is created) ------------------------------------------------------

    def _find(self, finder: Callable, name: str, what: str, option: str) -> Any:
        """Find a resource by name or id, or refuse with the option to fix."""
        from openstack import exceptions as sdk

        try:
            return finder(name, ignore_missing=False)
        except sdk.NotFoundException:
            raise CloudError(f"{what} {name!r} not found (see {option})") from None
        except sdk.DuplicateResource:
            raise CloudError(f"more than one {what} is called {name!r}: give its id to "
                             f"{option}") from None

    def _only_network(self, external: bool, option: str) -> Any:
        """The project's one internal (or external) network, or refuse when there is a choice."""
        found = [n for n in self.conn.network.networks()
                 if bool(n.is_router_external) == external]
        if len(found) != 1:
            names = ", ".join(sorted(n.name for n in found)) or "none"
            raise CloudError(f"choose the {'external' if external else 'server'} network with "
                             f"{option} (found: {names})")
        return found[0]

    def resolve(self, spec: ServerSpec) -> dict[str, Any]:
        """Look up the image, flavor and networks before creating anything."""
        found = {
            "image": self._find(self.conn.image.find_image, spec.image, "image", "--image"),
            "flavor": self._find(self.conn.compute.find_flavor, spec.flavor, "flavor",
                                 "--flavor"),
        }
        find_network = self.conn.network.find_network
        found["network"] = (self._find(find_network, spec.network, "network", "--network")
                            if spec.network else self._only_network(False, "--network"))
        found["floating_network"] = (
            self._find(find_network, spec.floating_network, "network", "--floating-network")
            if spec.floating_network else self._only_network(True, "--floating-network"))
        return found

    # -- up ---------------------------------------------------------------------------------

    def up(self, deployment: Deployment, spec: ServerSpec) -> Deployment:
        """Create keypair, security group, server and floating IP; undo all on failure."""
        existing = self.states.load(deployment.name)
        if existing is not None and existing.created():
            raise CloudError(f"deployment {deployment.name!r} exists (server {existing.server}, "
                             f"{existing.address or 'no address'}): "
                             f"`modelserve cloud down --name {deployment.name}` first")
        if not spec.allow_from:  # never a world-open default; the command asks for it
            raise CloudError("no --allow-from: say which addresses may reach SSH and the web "
                             "port")
        encoded_size = len(_encoded(spec.user_data))
        if encoded_size > USER_DATA_LIMIT:
            raise CloudError(f"the user-data is {encoded_size} bytes in base64, "
                             f"over Nova's {USER_DATA_LIMIT}: fetch the compose file by URL")
        with translated_errors():
            found = self.resolve(spec)
        try:
            with translated_errors():
                self._create(deployment, spec, found)
        except BaseException:
            self.say("failed: deleting what this run created")
            try:
                self.delete(deployment)
            except UserError as error:  # keep the original reason; the record stays for `down`
                self.say(f"could not delete everything ({error}); "
                         f"`modelserve cloud down --name {deployment.name}` retries")
            raise
        return deployment

    def _create(self, deployment: Deployment, spec: ServerSpec, found: dict[str, Any]) -> None:
        """The creations in order, each recorded as soon as it exists."""
        key_name = self._keypair(deployment, spec)
        group = self._security_group(deployment, spec)
        server = self._server(deployment, spec, found, key_name, group)
        self._wait_active(server)
        self._floating_ip(deployment, server, found["floating_network"])

    def _keypair(self, deployment: Deployment, spec: ServerSpec) -> str:
        """Reuse the named keypair if it holds our key, else upload it."""
        from openstack import exceptions as sdk

        name = spec.key_name or deployment.name
        pair = _get_or_none(self.conn.compute.get_keypair, name, sdk)
        if pair is not None:
            if pair.public_key.split()[:2] != spec.public_key.split()[:2]:
                raise CloudError(f"keypair {name!r} exists with another key: choose --key-name")
            self.say(f"keypair: reusing {name}")
            return name
        self.conn.compute.create_keypair(name=name, public_key=spec.public_key)
        deployment.keypair = name
        self.states.save(deployment)
        self.say(f"keypair: uploaded {name}")
        return name

    def _security_group(self, deployment: Deployment, spec: ServerSpec) -> Any:
        """A group opening SSH and the web port (TCP, ingress) and nothing else."""
        network = self.conn.network
        group = network.create_security_group(
            name=deployment.name,
            description=f"modelserve {deployment.name}: SSH and the web port")
        deployment.security_group = group.id
        self.states.save(deployment)
        network.set_tags(group, tags(deployment.name))
        for port in (*OPEN_PORTS, spec.web_port):
            for prefix in spec.allow_from:
                network.create_security_group_rule(
                    security_group_id=group.id, direction="ingress",
                    ethertype=f"IPv{ipaddress.ip_network(prefix).version}", protocol="tcp",
                    port_range_min=port, port_range_max=port, remote_ip_prefix=prefix)
        self.say(f"security group: {group.name} opens tcp "
                 f"{', '.join(map(str, (*OPEN_PORTS, spec.web_port)))} to "
                 f"{', '.join(spec.allow_from)}")
        return group

    def _server(self, deployment: Deployment, spec: ServerSpec, found: dict[str, Any],
                key_name: str, group: Any) -> Any:
        """Create the server with the user-data; Nova takes it base64-encoded."""
        server = self.conn.compute.create_server(
            name=deployment.name, image_id=found["image"].id, flavor_id=found["flavor"].id,
            networks=[{"uuid": found["network"].id}], key_name=key_name,
            security_groups=[{"name": group.name}],
            user_data=_encoded(spec.user_data),
            metadata={TAG: deployment.name, f"{TAG}_role": deployment.role})
        deployment.server = server.id
        self.states.save(deployment)
        self.say(f"server: {deployment.name} ({server.id}) building")
        return server

    def _wait_active(self, server: Any) -> Any:
        """Wait until ACTIVE, saying the status as it changes; ERROR gets Nova's fault."""
        from openstack import exceptions as sdk

        seen: list[str] = []

        def progress(percent: int) -> None:
            """Print the build progress when it changes."""
            line = f"server: building, {percent or 0}%"
            if not seen or seen[-1] != line:
                seen.append(line)
                self.say(line)

        try:
            server = self.conn.compute.wait_for_server(
                server, status="ACTIVE", failures=["ERROR"], interval=self.timing.poll_seconds,
                wait=self.timing.active_seconds, callback=progress)
        except sdk.ResourceFailure:
            fault = (self.conn.compute.get_server(server.id).fault or {}).get("message", "")
            raise CloudError(f"the server went into ERROR: {fault or 'no reason given'}") \
                from None
        except sdk.ResourceTimeout:
            raise CloudError(f"the server was not ACTIVE after {self.timing.active_seconds:.0f} "
                             "s") from None
        self.say("server: ACTIVE")
        return server

    def _floating_ip(self, deployment: Deployment, server: Any, external: Any) -> None:
        """Give the server's port a floating IP from the external network."""
        ports = list(self.conn.network.ports(device_id=server.id))
        if not ports:
            raise CloudError(f"the server {server.id} has no network port")
        ip = self.conn.network.create_ip(
            floating_network_id=external.id, port_id=ports[0].id,
            description=f"modelserve {deployment.name}")
        deployment.floating_ip = ip.id
        deployment.address = ip.floating_ip_address
        self.states.save(deployment)
        self.conn.network.set_tags(ip, tags(deployment.name))
        self.say(f"floating IP: {ip.floating_ip_address}")

    # -- down -------------------------------------------------------------------------------

    def tagged(self, name: str) -> Deployment:
        """What the cloud holds for a deployment by its tags and metadata (the record may be
        lost, or a killed run may not have written the last id)."""
        found = Deployment(name=name, role="")
        mine = f"{TAG}:{name}"
        for server in self.conn.compute.servers():
            if (server.metadata or {}).get(TAG) == name:
                found.server = server.id
        for group in self.conn.network.security_groups(tags=mine):
            found.security_group = group.id
        for ip in self.conn.network.ips(tags=mine):
            found.floating_ip = ip.id
        return found

    def delete(self, deployment: Deployment) -> list[str]:
        """Delete the floating IP, server, group and our keypair; say what went."""
        from openstack import exceptions as sdk

        gone = []
        with translated_errors():
            compute, network = self.conn.compute, self.conn.network
            if deployment.floating_ip:
                network.delete_ip(deployment.floating_ip, ignore_missing=True)
                gone.append(f"floating IP {deployment.address or deployment.floating_ip}")
            if deployment.server:
                server = _get_or_none(compute.get_server, deployment.server, sdk)
                if server is not None:
                    compute.delete_server(server)
                    # The group cannot go while a port of the server still uses it.
                    compute.wait_for_delete(server, interval=self.timing.poll_seconds,
                                            wait=self.timing.active_seconds)
                gone.append(f"server {deployment.server}")
            if deployment.security_group:
                network.delete_security_group(deployment.security_group, ignore_missing=True)
                gone.append(f"security group {deployment.security_group}")
            if deployment.keypair:
                compute.delete_keypair(deployment.keypair, ignore_missing=True)
                gone.append(f"keypair {deployment.keypair}")
        self.states.remove(deployment.name)
        return gone


def _encoded(user_data: str) -> str:
    """User-data as Nova takes it: base64 text."""
    return base64.b64encode(user_data.encode()).decode("ascii")


def _get_or_none(getter: Callable, resource_id: str, sdk: Any) -> Any:
    """The resource, or None when it is gone already."""
    try:
        return getter(resource_id)
    except sdk.NotFoundException:
        return None


def merge(recorded: Deployment | None, tagged: Deployment) -> Deployment:
    """The record, completed by what the tags found."""
    if recorded is None:
        return tagged
    for field_name in ("server", "security_group", "floating_ip"):
        if not getattr(recorded, field_name):
            setattr(recorded, field_name, getattr(tagged, field_name))
    return recorded

