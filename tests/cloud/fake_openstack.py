"""A fake OpenStack at its HTTP boundary: Keystone v3, Nova, Neutron and Glance, only the calls
`modelserve cloud` makes, on 127.0.0.1 in a thread. It records every request so that tests can
assert what was sent, and it can be told to fail the ways a real cloud fails."""

from __future__ import annotations

import json
import logging
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

USER, PASSWORD, PROJECT = "alice", "s3cret", "modelserve-tests"
TOKEN = "fake-token-0123456789"  # noqa: S105 (the fake cloud's own token)
IMAGE = {"id": "11111111-1111-4111-8111-111111111111", "name": "debian-12", "status": "active"}
FLAVOR = {"id": "2", "name": "m1.small", "vcpus": 1, "ram": 2048, "disk": 20}
PRIVATE = {"id": "22222222-2222-4222-8222-222222222222", "name": "private",
           "router:external": False, "status": "ACTIVE"}
PUBLIC = {"id": "33333333-3333-4333-8333-333333333333", "name": "public",
          "router:external": True, "status": "ACTIVE"}


@dataclass
class Call:
    """One request as the fake received it."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    headers: dict[str, str]


@dataclass
class Behaviour:
    """How the fake cloud misbehaves; the defaults are a healthy cloud."""

    build_polls: int = 2  # GETs of a new server that still say BUILD
    server_outcome: str = "ACTIVE"  # or "ERROR"
    quota_status: int | None = None  # 403 or 413 on server create
    console_polls: int = 1  # console reads before cloud-init's final message appears
    floating_address: str = "127.0.0.1"
    console_lines: list[str] = field(default_factory=list)  # more of cloud-init's output


@dataclass
class FakeOpenStack:
    """The fake cloud's state and its HTTP server."""

    behaviour: Behaviour = field(default_factory=Behaviour)
    calls: list[Call] = field(default_factory=list)
    servers: dict[str, dict] = field(default_factory=dict)
    keypairs: dict[str, dict] = field(default_factory=dict)
    security_groups: dict[str, dict] = field(default_factory=dict)
    rules: dict[str, dict] = field(default_factory=dict)
    floating_ips: dict[str, dict] = field(default_factory=dict)
    ports: dict[str, dict] = field(default_factory=dict)

    def start(self) -> FakeOpenStack:
        """Serve on a free port in a daemon thread."""
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the calls are recorded instead
        self._server = make_server("127.0.0.1", 0, self._app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop serving and close the port (connections are then refused); again: no-op."""
        if self._server.socket.fileno() != -1:
            self._server.shutdown()
            self._server.server_close()

    def requests(self, method: str, path_part: str) -> list[Call]:
        """The recorded calls of a method whose path contains path_part."""
        return [c for c in self.calls if c.method == method and path_part in c.path]

    # -- dispatch ---------------------------------------------------------------------------

    def _app(self, environ, start_response):
        """WSGI entry: record, authenticate, route."""
        request = Request(environ)
        body = request.get_json(silent=True) if request.data else None
        self.calls.append(Call(request.method, request.path, dict(request.args), body,
                               dict(request.headers)))
        response = self._respond(request, body)
        return response(environ, start_response)

    def _respond(self, request: Request, body: Any) -> Response:
        """Route a request to the service that answers it."""
        path = request.path.rstrip("/")
        if path in ("", "/v3") and request.method == "GET":
            return _json(_identity_versions(self.url))
        if path == "/v3/auth/tokens" and request.method == "POST":
            return self._token(body)
        if request.headers.get("X-Auth-Token") != TOKEN:
            return _error(401, "unauthorized", "The request you have made requires authentication.")
        for prefix, handler in (("/compute", self._nova), ("/network", self._neutron),
                                ("/image", self._glance)):
            if path == prefix or path.startswith(prefix + "/"):
                return handler(request.method, path[len(prefix):], request.args, body)
        return _error(404, "itemNotFound", f"no route {request.method} {path}")

    # -- Keystone ---------------------------------------------------------------------------

    def _token(self, body: dict) -> Response:
        """POST /v3/auth/tokens: a token and the catalog, or 401."""
        user = body["auth"]["identity"]["password"]["user"]
        if user.get("name") != USER or user.get("password") != PASSWORD:
            return _error(401, "error", "The request you have made requires authentication.")
        domain = {"id": "default", "name": "Default"}
        token = {
            "methods": ["password"], "expires_at": "2099-01-01T00:00:00.000000Z",
            "issued_at": "2026-01-01T00:00:00.000000Z",
            "user": {"id": "u1", "name": USER, "domain": domain},
            "project": {"id": "p1", "name": PROJECT, "domain": domain},
            "roles": [{"id": "r1", "name": "member"}],
            "catalog": [_service(kind, name, f"{self.url}{suffix}") for kind, name, suffix in (
                ("identity", "keystone", "/v3"), ("compute", "nova", "/compute/v2.1"),
                ("network", "neutron", "/network"), ("image", "glance", "/image"))],
        }
        response = _json({"token": token}, 201)
        response.headers["X-Subject-Token"] = TOKEN
        return response

    # -- Nova -------------------------------------------------------------------------------

    def _nova(self, method: str, path: str, query, body) -> Response:
        """The compute calls: version, flavors, keypairs, servers and their console."""
        parts = [p for p in path.split("/") if p][1:]  # after v2.1
        if not parts:
            return _json({"version": _version("v2.1", f"{self.url}/compute/v2.1/")})
        head, rest = parts[0], parts[1:]
        if head == "flavors":
            return self._find(method, rest, [FLAVOR], "flavor", "flavors", "itemNotFound")
        if head == "os-keypairs":
            return self._keypairs(method, rest, body)
        if head == "servers":
            return self._servers(method, rest, query, body)
        return _error(404, "itemNotFound", f"no route {method} /compute{path}")

    def _keypairs(self, method: str, rest: list[str], body) -> Response:
        """Keypairs by name."""
        if method == "POST":
            pair = dict(body["keypair"], fingerprint="aa:bb", type="ssh", user_id="u1")
            self.keypairs[pair["name"]] = pair
            return _json({"keypair": pair}, 200)
        if not rest:
            return _json({"keypairs": [{"keypair": k} for k in self.keypairs.values()]})
        pair = self.keypairs.get(rest[0])
        if pair is None:
            return _error(404, "itemNotFound", f"Keypair {rest[0]} not found for user u1")
        if method == "DELETE":
            del self.keypairs[rest[0]]
            return Response(status=202)
        return _json({"keypair": pair})

    def _servers(self, method: str, rest: list[str], query, body) -> Response:
        """Create, read (BUILD for a few polls), list, delete, console output."""
        if method == "POST" and not rest:
            return self._create_server(body["server"])
        if not rest or rest == ["detail"]:
            return _json({"servers": [self._show(s) for s in self.servers.values()]})
        server = self.servers.get(rest[0])
        if server is None:
            return _error(404, "itemNotFound", "Instance could not be found.")
        if method == "DELETE":
            del self.servers[rest[0]]
            self.ports.pop(server["port"], None)
            return Response(status=204)
        if rest[1:] == ["action"] and "os-getConsoleOutput" in body:
            return _json({"output": self._console(server)})
        server["polls"] += 1
        return _json({"server": self._show(server)})

    def _create_server(self, spec: dict) -> Response:
        """POST /servers: a BUILD server with a port on its network, or a quota refusal."""
        status = self.behaviour.quota_status
        if status is not None:
            kind = "forbidden" if status == 403 else "overLimit"
            return _error(status, kind, "Quota exceeded for instances: Requested 1, but already "
                                        "used 10 of 10 instances")
        sid = str(uuid.uuid4())
        port = {"id": str(uuid.uuid4()), "device_id": sid, "device_owner": "compute:nova",
                "network_id": spec["networks"][0]["uuid"], "status": "ACTIVE",
                "fixed_ips": [{"subnet_id": "s1", "ip_address": "10.0.0.5"}]}
        self.ports[port["id"]] = port
        self.servers[sid] = {"spec": spec, "id": sid, "polls": 0, "port": port["id"],
                             "console_reads": 0}
        return _json({"server": {"id": sid, "links": [], "adminPass": "x",
                                 "OS-DCF:diskConfig": "MANUAL",
                                 "security_groups": spec.get("security_groups", [])}}, 202)

    def _show(self, server: dict) -> dict:
        """A server as GET /servers/{id} shows it at this poll."""
        spec = server["spec"]
        status = "BUILD"
        if server["polls"] > self.behaviour.build_polls:
            status = self.behaviour.server_outcome
        shown = {"id": server["id"], "name": spec["name"], "status": status,
                 "metadata": spec.get("metadata", {}), "key_name": spec.get("key_name"),
                 "image": {"id": spec["imageRef"]}, "flavor": {"id": spec["flavorRef"]},
                 "addresses": {}, "progress": min(100, server["polls"] * 40)}
        if status == "ERROR":
            shown["fault"] = {"code": 500, "message": "No valid host was found. There are not "
                                                      "enough hosts available."}
        return shown

    def _console(self, server: dict) -> str:
        """Boot messages; cloud-init's final message after a few reads."""
        server["console_reads"] += 1
        lines = ["[    0.000000] Linux version 6.1.0", "cloud-init: running modules:final"]
        if server["console_reads"] > self.behaviour.console_polls:
            lines += ["modelserve-deploy-key: ssh-ed25519 AAAAC3NzaDEVKEY modelserve deploy key",
                      *self.behaviour.console_lines,
                      "modelserve-cloud-init-done dev: cloud-init finished after 97.5 seconds"]
        return "\n".join(lines) + "\n"

    # -- Neutron ----------------------------------------------------------------------------

    def _neutron(self, method: str, path: str, query, body) -> Response:
        """The network calls: networks, ports, security groups and rules, floating IPs, tags."""
        parts = [p for p in path.split("/") if p]
        if not parts:
            return _json({"versions": [_version("v2.0", f"{self.url}/network/v2.0/")]})
        parts = parts[1:]  # after v2.0
        head, rest = parts[0], parts[1:]
        if head == "networks":
            return self._find(method, rest, [PRIVATE, PUBLIC], "network", "networks",
                              "NetworkNotFound", query)
        if head == "ports":
            ports = [p for p in self.ports.values()
                     if all(str(p.get(k)) == v for k, v in query.items())]
            return _json({"ports": ports})
        collections = {"security-groups": ("security_group", self.security_groups),
                       "security-group-rules": ("security_group_rule", self.rules),
                       "floatingips": ("floatingip", self.floating_ips)}
        if head in collections:
            key, store = collections[head]
            return self._collection(method, rest, query, body, key, head, store)
        return _error(404, "NotFound", f"no route {method} /network{path}")

    def _collection(self, method, rest, query, body, key, plural, store) -> Response:
        """Create, show, list (with tag filters), tag and delete one kind of network resource."""
        if method == "POST":
            item = self._new_network_item(key, body[key])
            store[item["id"]] = item
            return _json({key: item}, 201)
        if not rest:
            items = [i for i in store.values() if _matches(i, query)]
            return _json({plural.replace("-", "_"): items})
        item = store.get(rest[0])
        if item is None:
            return _error(404, "NotFound", f"{key} {rest[0]} could not be found.")
        if rest[1:] == ["tags"] and method == "PUT":
            item["tags"] = list(body["tags"])
            return _json({"tags": item["tags"]})
        if method == "DELETE":
            del store[rest[0]]
            return Response(status=204)
        return _json({key: item})

    def _new_network_item(self, key: str, spec: dict) -> dict:
        """A new security group, rule or floating IP with the fields Neutron adds."""
        item = dict(spec, id=str(uuid.uuid4()), tags=[], project_id="p1")
        if key == "security_group":
            item["security_group_rules"] = []
        if key == "floatingip":
            item.update(floating_ip_address=self.behaviour.floating_address, status="ACTIVE")
            port = self.ports.get(spec.get("port_id", ""))
            item["fixed_ip_address"] = port["fixed_ips"][0]["ip_address"] if port else None
        return item

    # -- Glance -----------------------------------------------------------------------------

    def _glance(self, method: str, path: str, query, body) -> Response:
        """The image calls: versions, images by id or name."""
        parts = [p for p in path.split("/") if p]
        if not parts:
            return _json({"versions": [_version("v2.0", f"{self.url}/image/v2/")]})
        if parts[1:2] == ["images"]:
            return self._find(method, parts[2:], [IMAGE], "image", "images", "NotFound", query,
                              wrapped=False)
        return _error(404, "NotFound", f"no route {method} /image{path}")

    # -- shared -----------------------------------------------------------------------------

    def _find(self, method, rest, items, key, plural, code, query=None, *, wrapped=True):
        """GET one item by id (404 if unknown), or the list filtered by the query."""
        if rest and rest[0] != "detail":
            found = [i for i in items if i["id"] == rest[0]]
            if not found:
                return _error(404, code, f"{key} {rest[0]} could not be found.")
            return _json({key: found[0]} if wrapped else found[0])
        return _json({plural: [i for i in items if _matches(i, query or {})]})


def _matches(item: dict, query) -> bool:
    """Whether an item passes the list filters we honour (name, tags, router:external)."""
    for name, value in dict(query).items():
        if name == "tags":
            if not set(value.split(",")) <= set(item.get("tags", [])):
                return False
        elif name in ("name", "router:external", "security_group_id"):
            if str(item.get(name)).lower() != str(value).lower():
                return False
    return True


def _json(data: Any, status: int = 200) -> Response:
    """A JSON response."""
    return Response(json.dumps(data), status=status, mimetype="application/json")


def _error(status: int, kind: str, message: str) -> Response:
    """An error in the shape the OpenStack services use ({"kind": {"code", "message"}})."""
    return _json({kind: {"code": status, "message": message}}, status)


def _service(kind: str, name: str, url: str) -> dict:
    """One service catalog entry with a public endpoint."""
    return {"type": kind, "name": name, "id": f"{name}-id", "endpoints": [
        {"id": f"{name}-public", "interface": "public", "region": "RegionOne",
         "region_id": "RegionOne", "url": url}]}


def _version(version_id: str, href: str) -> dict:
    """A version document as discovery reads it (no microversions: the 2.1 base API)."""
    return {"id": version_id, "status": "CURRENT", "version": "", "min_version": "",
            "links": [{"rel": "self", "href": href}]}


def _identity_versions(url: str) -> dict:
    """GET /v3: the identity version document."""
    return {"version": {"id": "v3.14", "status": "stable", "updated": "2020-04-07T00:00:00Z",
                        "links": [{"rel": "self", "href": f"{url}/v3/"}],
                        "media-types": [{"base": "application/json",
                                         "type": "application/vnd.openstack.identity-v3+json"}]}}
