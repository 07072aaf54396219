"""Pure IP/MAC helpers, with hypothesis where a rule holds for all inputs."""

import random

import netaddr
import pytest
from hypothesis import given
from hypothesis import strategies as st

from config.errors import Invalid
from networking import ipam


def test_cidr_must_be_a_network_address():
    assert str(ipam.parse_cidr("10.0.0.0/24")) == "10.0.0.0/24"
    with pytest.raises(Invalid, match="did you mean 10.0.0.0/24"):
        ipam.parse_cidr("10.0.0.5/24")
    for bad in ("10.0.0.0", "10.0.0.0/33", "banana", "10.0.0.0/24/1"):
        with pytest.raises(Invalid):
            ipam.parse_cidr(bad)
    with pytest.raises(Invalid, match="not an IPv6"):
        ipam.parse_cidr("10.0.0.0/24", ip_version=6)


def test_macs_are_normalised_to_lower_case_colons():
    assert ipam.parse_mac("FA-16-3E-AA-BB-CC") == "fa:16:3e:aa:bb:cc"
    assert ipam.parse_mac("fa16.3eaa.bbcc") == "fa:16:3e:aa:bb:cc"
    for bad in ("fa:16:3e", "zz:16:3e:aa:bb:cc", "01:00:5e:00:00:01"):
        with pytest.raises(Invalid):
            ipam.parse_mac(bad)


def test_random_mac_keeps_the_base():
    mac = ipam.random_mac("fa:16:3e", random.Random(1))
    assert mac.startswith("fa:16:3e:") and ipam.parse_mac(mac) == mac


def test_default_pools_exclude_network_broadcast_and_gateway():
    net = netaddr.IPNetwork("10.0.0.0/29")
    gateway = ipam.default_gateway(net)
    assert str(gateway) == "10.0.0.1"
    assert ipam.default_pools(net, gateway) == [{"start": "10.0.0.2", "end": "10.0.0.6"}]
    v6 = netaddr.IPNetwork("2001:db8::/64")
    pools = ipam.default_pools(v6, ipam.default_gateway(v6))
    assert pools[0]["start"] == "2001:db8::2"


@pytest.mark.parametrize(
    ("pools", "message"),
    [
        ([{"start": "10.0.0.20", "end": "10.0.0.10"}], "start is after end"),
        ([{"start": "10.0.1.1", "end": "10.0.1.5"}], "outside the subnet"),
        (
            [{"start": "10.0.0.2", "end": "10.0.0.9"}, {"start": "10.0.0.9", "end": "10.0.0.12"}],
            "overlaps",
        ),
        ([{"start": "10.0.0.1", "end": "10.0.0.9"}], "Gateway"),
        ([{"start": "10.0.0.250", "end": "10.0.0.255"}], "reserved"),
        ([{"start": "10.0.0.2"}], "each pool"),
        ([{"start": "2001:db8::1", "end": "2001:db8::5"}], "not IPv4"),
    ],
)
def test_bad_pools_are_refused_with_the_reason(pools, message):
    net = netaddr.IPNetwork("10.0.0.0/24")
    with pytest.raises(Invalid, match=message):
        ipam.parse_pools(pools, net, netaddr.IPAddress("10.0.0.1"))


pool_bounds = st.tuples(st.integers(2, 250), st.integers(0, 40))


@given(st.lists(pool_bounds, min_size=1, max_size=4), st.integers(1, 64), st.integers())
def test_random_candidates_are_distinct_members_of_the_pools(bounds, count, seed):
    ranges = netaddr.IPSet()
    pools = []
    for start, length in bounds:
        pool = netaddr.IPSet(
            netaddr.IPRange(f"10.0.0.{start}", f"10.0.0.{min(start + length, 254)}")
        )
        if pool & ranges:
            continue
        ranges |= pool
        first, last = pool.iprange()[0], pool.iprange()[-1]
        pools.append({"start": str(first), "end": str(last)})
    picks = ipam.random_candidates(pools, count, random.Random(seed))
    assert len(picks) == len(set(picks)) <= count
    assert all(netaddr.IPAddress(p) in ranges for p in picks)
    assert picks, "a non-empty pool always yields a candidate"


@given(st.lists(pool_bounds, min_size=1, max_size=4), st.integers(1, 300))
def test_addresses_in_order_walks_every_pool_address_once(bounds, chunk):
    pools, ranges = [], netaddr.IPSet()
    for start, length in bounds:
        pool = netaddr.IPSet(
            netaddr.IPRange(f"10.0.0.{start}", f"10.0.0.{min(start + length, 254)}")
        )
        if pool & ranges:
            continue
        ranges |= pool
        pools.append({"start": str(pool.iprange()[0]), "end": str(pool.iprange()[-1])})
    walked = [a for batch in ipam.addresses_in_order(pools, chunk) for a in batch]
    assert len(walked) == len(set(walked)) == ipam.pool_size(pools) == ranges.size
    assert all(len(batch) <= chunk for batch in ipam.addresses_in_order(pools, chunk))
