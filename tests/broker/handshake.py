"""Try TLS handshakes with a broker, as a worker host would: `python handshake.py CASES_JSON`.

Runs inside a worker host's network namespace (standard library only) and prints one JSON line:
for each case, "ok" or why it failed. A case names the address, port, the CA to trust, the
client certificate and key (or none), and the name to check the broker's certificate against;
a case without a CA is a plain TCP connection.
After the handshake the client sends the AMQP protocol header: a broker that took the
handshake but refuses the peer closes the connection instead of answering.
"""

from __future__ import annotations

import json
import socket
import ssl
import sys

AMQP_HEADER = b"AMQP\x00\x00\x09\x01"


def attempt(case: dict) -> str:
    """One handshake and protocol header; "ok" when the broker answers with Connection.Start.

    A case without "ca" only opens a TCP connection ("ok" when it opens).
    """
    if "ca" not in case:
        try:
            socket.create_connection((case["address"], case["port"]), timeout=3).close()
        except OSError as error:
            return f"{type(error).__name__}: {error}"
        return "ok"
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_verify_locations(case["ca"])
    if case.get("cert"):
        context.load_cert_chain(case["cert"], case["key"])
    try:
        with socket.create_connection((case["address"], case["port"]), timeout=5) as raw, \
                context.wrap_socket(raw, server_hostname=case["name"]) as tls:
            tls.sendall(AMQP_HEADER)
            # TLS 1.3 sends the broker's verdict on our certificate after the handshake.
            answer = tls.recv(7)
            return "ok" if answer[:1] == b"\x01" else f"closed ({answer!r})"
    except (OSError, ssl.SSLError) as error:
        return f"{type(error).__name__}: {error}"


def main(argv: list[str]) -> int:
    """Try every case given as a JSON list; print the outcomes as a JSON list."""
    print(json.dumps([attempt(case) for case in json.loads(argv[0])]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
