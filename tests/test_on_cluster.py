"""The whole API contract on a real three-master Redis Cluster (CLUSTER ADDSLOTSRANGE, CLUSTER MEET).

Every verification's keys share one hash tag and every script touches one slot; the same tests
that run on one server run here unchanged: the whole flow, callbacks, reconciliation of lost
callbacks, and both races.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.contract import contract_tests
from tests.support.redis_servers import cluster_setup

globals().update(contract_tests())


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """A Cluster of three primaries for this module's tests: ``redis+cluster://...``."""
    with cluster_setup() as cluster:
        yield cluster.url
