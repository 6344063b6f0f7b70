"""The reference Node.js client (signal24/tpot-client v0.2.0, unchanged) against a cluster:
a 2-node cluster behind HAProxy, visitors landing on both nodes, bytes checked both ways.

The reference client is not part of this repository, is never committed and cannot be
installed from a package registry (it is not on npm), so these tests are not part of
`make test`: `make test-reference` runs them, with TPOT_REFERENCE_CLIENT pointing at a
checkout of it with its dependencies installed, e.g.

    git clone https://github.com/signal24/tpot-client /tmp/ref-client
    git -C /tmp/ref-client checkout v0.2.0 && (cd /tmp/ref-client && npm install)
    make test-reference TPOT_REFERENCE_CLIENT=/tmp/ref-client

Without it, or without Node.js, they fail saying what is missing.
"""

import hashlib
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.e2e.cluster import Cluster, visit
from tests.e2e.conftest import expected_bytes

REFERENCE = os.environ.get("TPOT_REFERENCE_CLIENT")


def reference_command():
    if not REFERENCE or not (Path(REFERENCE) / "index.js").exists():
        pytest.fail("TPOT_REFERENCE_CLIENT is not set to a checkout of signal24/tpot-client v0.2.0 (see this module)")
    node = shutil.which("node")
    if node is None:
        pytest.fail("Node.js (node) is not installed, which the reference client needs")
    return (node, str(Path(REFERENCE) / "index.js"))


@pytest.fixture
def two_nodes(tmp_path_factory):
    command = reference_command()
    made = Cluster(tmp_path_factory, nodes=2)
    yield made, command
    made.stop()


def test_the_reference_client_serves_visitors_of_every_node(two_nodes, target):
    cluster, command = two_nodes
    client = cluster.client(target, "legacy", command=command)
    assert client.url == f"http://legacy.localhost:{cluster.front}"

    def one(i):
        # (The reference client adds no X-Forwarded-For: the target cannot see the visitor.)
        status, body = visit(cluster.front, "legacy", path=f"/bytes/{1_000_000}?seed={i}")
        assert status == 200 and hashlib.sha256(body).digest() == hashlib.sha256(expected_bytes(1_000_000, i)).digest()
        upload = expected_bytes(500_000, i)
        status, body = visit(cluster.front, "legacy", "POST", "/sha256", upload)
        assert (status, body) == (200, f"{hashlib.sha256(upload).hexdigest()} 500000".encode())
        return i

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(one, range(40))) == list(range(40))
    holder = cluster.holder()
    other = next(node for node in cluster.nodes if node is not holder)
    # Round-robin: half of the 80 visitor connections landed on the node without the tunnel.
    assert other.metric('tpot_forwarded_conversations_total{direction="out"}') >= 40
    # The same name on the other node is taken, as for our client.
    assert [node.status()["cluster_tunnels"] for node in cluster.nodes] == [1, 1]
