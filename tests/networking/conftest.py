from dataclasses import dataclass

import pytest

from networking.models import Network, Segment, Subnet
from tests.factories import HostAgentFactory, NetworkFactory, segments_by_name, subnets_by_segment

V2 = "/networking/v2.0"


@dataclass
class Routed:
    network: Network
    segments: dict[str, Segment]
    subnets: dict[str, Subnet]  # by segment name


@pytest.fixture
def routed(admin) -> Routed:
    """A routed network of the admin's project: segment rack1 (physnet1,
    VLAN 101, 10.1.0.0/24) and rack2 (physnet2, VLAN 102, 10.2.0.0/24 with
    a 3-address pool); hosts h1 on physnet1 and h2 on physnet2."""
    network = NetworkFactory(project=admin.project, two_racks=True, rack2_pool=3)
    HostAgentFactory(host="h1", physnets=["physnet1"])
    HostAgentFactory(host="h2", physnets=["physnet2"])
    return Routed(network, segments_by_name(network), subnets_by_segment(network))
