"""TLS on the q port with a real client: PyKX (`tls=True`) against the real `qgate serve`, with
certificates from `qgate certs` and the whoami fixture plugin answering with what the session knows.

PyKX (unlicensed, 4.2.0) does TLS with kdb+'s own client code, configured by kdb+'s environment
variables, which it reads once, when the first TLS connection is made: the CA to trust
(`KX_SSL_CA_CERT_FILE`) and the client certificate to present (`KX_SSL_CERT_FILE`,
`KX_SSL_KEY_FILE`). The session's `certs` fixture (in conftest.py, shared with the gateway's TLS
tests for that reason) sets them before any TLS connection of this process, to the development CA
and to the client certificate for `alice`. The CA is the root alone: the server must send the
intermediate for PyKX to verify its certificate. The servers get their settings from their config
files, which win over those variables.
"""

import pytest

from conftest import ROOT, Server, binary

WHOAMI = ROOT / "plugins" / "target" / "wasm32-wasip2" / "release" / "whoami.wasm"


def serve(tmp_path_factory, certs, mode, client_auth="none", user_from="none"):
    """`qgate serve` with [tls] as given and the whoami plugin, on a free port."""
    if not WHOAMI.is_file():
        pytest.fail(f"whoami.wasm not found at {WHOAMI}: run `cargo xtask plugins`")
    directory = tmp_path_factory.mktemp("tls-server")
    config = directory / "qgate.toml"
    config.write_text(
        "[tls]\n"
        f'mode = "{mode}"\n'
        f'cert_file = "{certs / "server.pem"}"\n'
        f'key_file = "{certs / "server.key"}"\n'
        f'client_auth = "{client_auth}"\n'
        f'ca_file = "{certs / "ca.pem"}"\n'
        f'user_from = "{user_from}"\n'
        "[[plugins]]\n"
        'name = "whoami"\n'
        f'path = "{WHOAMI}"\n'
    )
    argv = [binary("QGATE_BIN", "qgate"), "serve", "--config", str(config), "-p", "127.0.0.1:0"]
    return Server(argv, directory / "stderr.log", startup_timeout=180.0)


@pytest.fixture(scope="module")
def required(tmp_path_factory, certs):
    """TLS required, client certificates verified when presented, the user from the CN."""
    server = serve(tmp_path_factory, certs, "required", client_auth="optional", user_from="cn")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def optional(tmp_path_factory, certs):
    """Plain and TLS on one port, no client certificates asked for."""
    server = serve(tmp_path_factory, certs, "optional")
    yield server
    server.stop()


def whoami(server, tls, username="bob"):
    import pykx as kx

    with kx.SyncQConnection(
        server.host, server.port, username=username, password="pw", tls=tls, timeout=10.0
    ) as conn:
        facts = conn("whoami").py()
    return {key: value.decode() if isinstance(value, bytes) else value
            for key, value in facts.items()}


def test_pykx_over_tls_presents_its_certificate_and_a_plugin_sees_it(required):
    facts = whoami(required, tls=True)
    assert facts["protocol"] in ("TLSv1.2", "TLSv1.3"), facts
    assert facts["cn"] == "alice", facts
    # user_from = "cn": the certificate, not the handshake, names the user.
    assert facts["user"] == "alice", facts
    assert len(facts["fingerprint"]) == 64, facts
    assert int(facts["notBefore"]) < int(facts["notAfter"]), facts


def test_pykx_without_tls_is_refused_when_tls_is_required(required):
    import pykx as kx

    with pytest.raises(kx.PyKXException):
        kx.SyncQConnection(required.host, required.port, username="bob", password="pw",
                           timeout=10.0)
    assert required.alive()
    assert "this port requires TLS" in required.log()


def test_pykx_plain_and_tls_on_one_port(optional):
    plain = whoami(optional, tls=False, username="carol")
    assert plain["user"] == "carol" and plain["protocol"] == "", plain
    secure = whoami(optional, tls=True, username="carol")
    assert secure["user"] == "carol", secure
    assert secure["protocol"] in ("TLSv1.2", "TLSv1.3"), secure
    # No client certificate was asked for.
    assert secure["cn"] == "", secure
