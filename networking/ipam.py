"""Pure IP and MAC helpers on netaddr: parsing, pools, candidates.

No database here; networking.services calls these under the subnet lock.
Invalid input raises config.errors.Invalid with a message for the caller.
"""

import random
import re
from collections.abc import Iterable, Iterator

import netaddr

from config.errors import Invalid

MAC_DIALECT = netaddr.mac_unix_expanded  # "fa:16:3e:0a:0b:0c"


def parse_cidr(text: str, ip_version: int | None = None) -> netaddr.IPNetwork:
    try:
        network = netaddr.IPNetwork(text)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        raise Invalid(f"Invalid input for cidr: {text!r} is not a valid CIDR.") from None
    if "/" not in str(text):
        raise Invalid(f"Invalid input for cidr: {text!r} has no prefix length.")
    if network.ip != network.network:
        raise Invalid(
            f"Invalid input for cidr: {text!r} has host bits set; did you mean {network.cidr}?"
        )
    if ip_version is not None and network.version != ip_version:
        raise Invalid(f"Invalid input for cidr: {text!r} is not an IPv{ip_version} network.")
    return network


def parse_ip(text: str, *, field: str = "ip_address") -> netaddr.IPAddress:
    try:
        # INET_PTON: no legacy forms such as "10.1" or octal.
        return netaddr.IPAddress(text, flags=netaddr.INET_PTON)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        raise Invalid(f"Invalid input for {field}: {text!r} is not a valid IP address.") from None


# Six octets, as colon/dash pairs, dotted quads of hex, or twelve digits;
# netaddr alone also accepts forms with missing digits ("fa:16:3e").
_MAC_FORMS = re.compile(
    r"[0-9a-f]{2}([:-])[0-9a-f]{2}(\1[0-9a-f]{2}){4}|[0-9a-f]{4}(\.[0-9a-f]{4}){2}|[0-9a-f]{12}",
    re.IGNORECASE,
)


def parse_mac(text: str) -> str:
    """The MAC in lower-case colon form, or Invalid."""
    if not isinstance(text, str) or not _MAC_FORMS.fullmatch(text):
        raise Invalid(f"Invalid input for mac_address: {text!r} is not a valid MAC address.")
    try:
        mac = netaddr.EUI(text, version=48, dialect=MAC_DIALECT)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        raise Invalid(
            f"Invalid input for mac_address: {text!r} is not a valid MAC address."
        ) from None
    if mac.value & (1 << 40):  # the I/G bit: a group address cannot be a port's
        raise Invalid(f"Invalid input for mac_address: {text!r} is a multicast address.")
    return str(mac).lower()


def random_mac(base: str, rng: random.Random | None = None) -> str:
    """A MAC with the configured prefix (e.g. "fa:16:3e") and random rest."""
    rng = rng or random.SystemRandom()
    prefix = [int(octet, 16) for octet in base.split(":")]
    rest = [rng.randrange(256) for _ in range(6 - len(prefix))]
    return ":".join(f"{octet:02x}" for octet in prefix + rest)


def reserved_addresses(network: netaddr.IPNetwork) -> set[netaddr.IPAddress]:
    """Addresses no port may hold: the network address (IPv4: and the
    broadcast) except on point-to-point sized IPv4 subnets; IPv6's first
    address is the subnet-router anycast."""
    if network.version == 4 and network.prefixlen >= 31:
        return set()
    reserved = {network.network}
    if network.version == 4:
        reserved.add(network.broadcast)
    return reserved


def default_gateway(network: netaddr.IPNetwork) -> netaddr.IPAddress | None:
    if network.size <= 2:
        return None
    return netaddr.IPAddress(network.first + 1, network.version)


def default_pools(network: netaddr.IPNetwork, gateway: netaddr.IPAddress | None) -> list[dict]:
    usable = netaddr.IPSet(network) - netaddr.IPSet(reserved_addresses(network))
    if gateway is not None:
        usable.remove(gateway)
    return [{"start": str(r[0]), "end": str(r[-1])} for r in usable.iter_ipranges()]


def parse_pools(
    raw: Iterable[dict], network: netaddr.IPNetwork, gateway: netaddr.IPAddress | None
) -> list[dict]:
    """Validated pools in canonical form: each inside the cidr, start <= end,
    none overlapping another or holding the gateway or a reserved address."""
    pools, seen = [], netaddr.IPSet()
    for entry in raw:
        if not isinstance(entry, dict) or set(entry) != {"start", "end"}:
            raise Invalid("Invalid input for allocation_pools: each pool is {'start', 'end'}.")
        start = parse_ip(entry["start"], field="allocation_pools")
        end = parse_ip(entry["end"], field="allocation_pools")
        if start.version != network.version or end.version != network.version:
            raise Invalid(f"Allocation pool {start}-{end} is not IPv{network.version}.")
        if start > end:
            raise Invalid(f"Allocation pool {start}-{end}: start is after end.")
        if start not in network or end not in network:
            raise Invalid(f"Allocation pool {start}-{end} is outside the subnet {network}.")
        pool = netaddr.IPSet(netaddr.IPRange(start, end))
        if seen & pool:
            raise Invalid(f"Allocation pool {start}-{end} overlaps another pool.")
        if gateway is not None and gateway in pool:
            raise Invalid(f"Gateway {gateway} is inside allocation pool {start}-{end}.")
        for address in reserved_addresses(network):
            if address in pool:
                raise Invalid(f"Allocation pool {start}-{end} includes reserved address {address}.")
        seen |= pool
        pools.append({"start": str(start), "end": str(end)})
    return pools


def pool_ranges(pools: list[dict]) -> list[netaddr.IPRange]:
    return [netaddr.IPRange(p["start"], p["end"]) for p in pools]


def pool_size(pools: list[dict]) -> int:
    return sum(r.size for r in pool_ranges(pools))


def random_candidates(pools: list[dict], count: int, rng: random.Random) -> list[str]:
    """Up to ``count`` distinct random addresses of the pools, weighted by
    pool size. Random picks keep concurrent allocators apart."""
    ranges = pool_ranges(pools)
    total = sum(r.size for r in ranges)
    picks: set[str] = set()
    for _ in range(min(count, total) * 2):
        offset = rng.randrange(total)
        for r in ranges:
            if offset < r.size:
                picks.add(str(netaddr.IPAddress(r.first + offset, r.version)))
                break
            offset -= r.size
        if len(picks) >= count:
            break
    return list(picks)


def addresses_in_order(pools: list[dict], chunk: int) -> Iterator[list[str]]:
    """Every pool address, lowest first, in chunks of ``chunk``."""
    batch: list[str] = []
    for r in pool_ranges(pools):
        for value in range(r.first, r.last + 1):
            batch.append(str(netaddr.IPAddress(value, r.version)))
            if len(batch) == chunk:
                yield batch
                batch = []
    if batch:
        yield batch
