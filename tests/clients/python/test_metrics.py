"""`[metrics]` with a real client: PyKX (unlicensed) through `qgate serve` in front of the test
upstream, with `/metrics` scraped over HTTP before and after its logins and queries.

The counters move by exactly what the client did (PyKX's own context queries are answered by
qgate itself, so they count as `reply`, never as `pass`), and the histograms have buckets.
"""

import re
import socket
import urllib.error
import urllib.request

import pytest

import pykx as kx

from cases import PASSWORD
from conftest import GATEWAY_USERS, address, eventually, start_gateway, upstream_table

assert not kx.licensed, "these tests are for PyKX's unlicensed mode: set PYKX_UNLICENSED=true"

SAMPLE = re.compile(r"^(?P<series>[a-z_]+(?:\{[^}]*\})?) (?P<value>\S+)$")


def free_port():
    """A port free now on 127.0.0.1, released for the server to bind."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def scrape(url):
    """The samples of one scrape: series (name and labels, as written) → value."""
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("application/openmetrics-text")
        text = response.read().decode()
    assert text.endswith("# EOF\n"), text
    samples = {}
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if match:
            samples[match["series"]] = float(match["value"])
    return samples


def connect(server, user=GATEWAY_USERS[0], password=PASSWORD):
    return kx.SyncQConnection(
        host=server.host, port=server.port, username=user, password=password, timeout=30.0
    )


def sync(decision):
    return f'qgate_requests_total{{event="sync",decision="{decision}"}}'


def test_pykx_moves_the_counters_and_the_histograms_have_buckets(servers, password_files):
    upstream = servers.start("upstream", "--name", "rdb")
    port = free_port()
    qgate = start_gateway(
        servers, password_files["mixed"], upstream_table("rdb", [upstream]),
        extra=f'[metrics]\nlisten = "127.0.0.1:{port}"\n',
    )
    url = f"http://127.0.0.1:{port}/metrics"
    before = scrape(url)
    assert before["qgate_connections_total"] == 0
    assert before[sync("pass")] == 0

    with pytest.raises(kx.exceptions.PyKXException, match="(?i)authentication|access"):
        connect(qgate, password="wrong")
    with connect(qgate) as conn:
        for value in range(3):
            assert conn("echo", kx.LongAtom(value)).py() == value
        after = scrape(url)
        assert after["qgate_connections_open"] == 1

    assert after["qgate_connections_total"] == 2
    assert after['qgate_logins_total{result="accepted"}'] == 1
    assert after['qgate_logins_total{result="denied"}'] == 1
    assert after[sync("pass")] == 3
    # PyKX's context queries, answered by qgate.
    assert after[sync("reply")] >= 1
    total = after[sync("pass")] + after[sync("reply")]
    assert after['qgate_request_duration_seconds_bucket{le="+Inf",event="sync"}'] == total
    assert after['qgate_request_duration_seconds_count{event="sync"}'] == total
    buckets = [series for series in after
               if series.startswith("qgate_request_duration_seconds_bucket{")
               and 'event="sync"' in series]
    assert len(buckets) > 2, buckets
    server = f'upstream="rdb",server="{address(upstream)}"'
    assert after[f"qgate_upstream_query_duration_seconds_count{{{server}}}"] == 3
    assert f'qgate_upstream_query_duration_seconds_bucket{{le="+Inf",{server}}}' in after
    eventually("the upstream is up", lambda: scrape(url).get(f"qgate_upstream_up{{{server}}}") == 1)
    eventually("the client's connection is closed",
               lambda: scrape(url)["qgate_connections_open"] == 0)

    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10)
    assert error.value.code == 404
    assert qgate.alive()
