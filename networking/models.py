"""Neutron's model, trimmed to what network-aware placement needs.

A network has one or more segments; with several it is a *routed network*,
whose subnets each live on one segment and are reachable only from the hosts
that reach that segment. Hosts report what they can plug (HostAgent and its
rows); ports are bound to a host by the mechanism drivers in binding.py.
"""

import uuid

from django.db import models
from django.db.models.functions import Lower


class Network(models.Model):
    """A layer-2 network (Neutron's network)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    project = models.ForeignKey(
        "identity.Project", on_delete=models.PROTECT, related_name="networks"
    )
    name = models.CharField(max_length=255, blank=True, db_index=True)
    description = models.CharField(max_length=255, blank=True)
    admin_state_up = models.BooleanField(default=True)
    # Shared networks are visible to, and usable by, every project.
    shared = models.BooleanField(default=False)
    mtu = models.PositiveIntegerField(default=1500)
    revision_number = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(mtu__gte=68, mtu__lte=65535), name="network_mtu_range"
            ),
        ]

    def __str__(self) -> str:
        return self.name or str(self.id)


class NetworkType(models.TextChoices):
    FLAT = "flat"
    VLAN = "vlan"
    VXLAN = "vxlan"


class Segment(models.Model):
    """Where a network's traffic actually runs: a VLAN on a physical
    network, a flat physical network, or a VXLAN overlay."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    network = models.ForeignKey(Network, on_delete=models.CASCADE, related_name="segments")
    name = models.CharField(max_length=255, blank=True)
    description = models.CharField(max_length=255, blank=True)
    network_type = models.CharField(max_length=16, choices=NetworkType.choices)
    physical_network = models.CharField(max_length=64, blank=True, db_index=True)
    segmentation_id = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            # A VLAN id is used once per physical network, a VNI once, and a
            # physical network carries at most one flat segment.
            models.UniqueConstraint(
                fields=["physical_network", "segmentation_id"],
                condition=models.Q(network_type="vlan"),
                name="segment_vlan_once_per_physnet",
            ),
            models.UniqueConstraint(
                fields=["segmentation_id"],
                condition=models.Q(network_type="vxlan"),
                name="segment_vni_once",
            ),
            models.UniqueConstraint(
                fields=["physical_network"],
                condition=models.Q(network_type="flat"),
                name="segment_flat_once_per_physnet",
            ),
            models.CheckConstraint(
                name="segment_type_fields",
                condition=(
                    models.Q(
                        network_type="vlan",
                        segmentation_id__gte=1,
                        segmentation_id__lte=4094,
                        physical_network__gt="",
                    )
                    | models.Q(
                        network_type="flat",
                        segmentation_id__isnull=True,
                        physical_network__gt="",
                    )
                    | models.Q(
                        network_type="vxlan",
                        segmentation_id__gte=1,
                        segmentation_id__lte=2**24 - 1,
                        physical_network="",
                    )
                ),
            ),
        ]

    def __str__(self) -> str:
        where = self.physical_network or "overlay"
        tag = f":{self.segmentation_id}" if self.segmentation_id else ""
        return f"{self.name or self.id} ({self.network_type} {where}{tag})"


class Subnet(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    network = models.ForeignKey(Network, on_delete=models.CASCADE, related_name="subnets")
    # On a routed network every subnet sits on a segment; otherwise none do.
    segment = models.ForeignKey(
        Segment, on_delete=models.PROTECT, null=True, blank=True, related_name="subnets"
    )
    project = models.ForeignKey(
        "identity.Project", on_delete=models.PROTECT, related_name="subnets"
    )
    name = models.CharField(max_length=255, blank=True, db_index=True)
    description = models.CharField(max_length=255, blank=True)
    ip_version = models.PositiveSmallIntegerField(choices=[(4, "IPv4"), (6, "IPv6")])
    # Canonical form (netaddr), e.g. "10.0.0.0/24"; validated by ipam.py.
    cidr = models.CharField(max_length=43)
    gateway_ip = models.GenericIPAddressField(null=True, blank=True)
    # [{"start": "10.0.0.2", "end": "10.0.0.254"}, ...], disjoint, inside cidr.
    allocation_pools = models.JSONField(default=list)
    enable_dhcp = models.BooleanField(default=True)
    dns_nameservers = models.JSONField(default=list)
    host_routes = models.JSONField(default=list)
    revision_number = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.name or self.id} ({self.cidr})"


class IpAllocationMode(models.TextChoices):
    IMMEDIATE = "immediate"
    # Routed networks: the IP comes from the segment of the host the port is
    # bound to, so it is allocated at bind time.
    DEFERRED = "deferred"
    NONE = "none"


class PortStatus(models.TextChoices):
    DOWN = "DOWN"
    BUILD = "BUILD"
    ACTIVE = "ACTIVE"


class VnicType(models.TextChoices):
    NORMAL = "normal"
    DIRECT = "direct"
    MACVTAP = "macvtap"
    BAREMETAL = "baremetal"


class VifType(models.TextChoices):
    UNBOUND = "unbound"
    BINDING_FAILED = "binding_failed"
    OVS = "ovs"
    VHOSTUSER = "vhostuser"
    HW_VEB = "hw_veb"
    MACVTAP = "macvtap"
    OTHER = "other"


class Port(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    network = models.ForeignKey(Network, on_delete=models.PROTECT, related_name="ports")
    project = models.ForeignKey("identity.Project", on_delete=models.PROTECT, related_name="ports")
    name = models.CharField(max_length=255, blank=True, db_index=True)
    description = models.CharField(max_length=255, blank=True)
    # Lower-case colon form ("fa:16:3e:00:00:01"), normalised by ipam.py.
    mac_address = models.CharField(max_length=17, db_index=True)
    admin_state_up = models.BooleanField(default=True)
    status = models.CharField(max_length=8, choices=PortStatus.choices, default=PortStatus.DOWN)
    device_id = models.CharField(max_length=255, blank=True, db_index=True)
    device_owner = models.CharField(max_length=255, blank=True, db_index=True)
    ip_allocation = models.CharField(
        max_length=16, choices=IpAllocationMode.choices, default=IpAllocationMode.IMMEDIATE
    )
    # binding:* (admin-only on the wire). The host is stored by name, like
    # Neutron's binding:host_id: networking never imports compute.
    binding_host = models.CharField(max_length=255, blank=True, db_index=True)
    binding_vnic_type = models.CharField(
        max_length=16, choices=VnicType.choices, default=VnicType.NORMAL
    )
    binding_profile = models.JSONField(default=dict, blank=True)
    binding_vif_type = models.CharField(
        max_length=16, choices=VifType.choices, default=VifType.UNBOUND
    )
    binding_vif_details = models.JSONField(default=dict, blank=True)
    # Why the last bind failed, for admins (Neutron only logs it).
    binding_failure = models.TextField(blank=True)
    revision_number = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["network", "mac_address"], name="port_mac_once_per_network"
            ),
            models.CheckConstraint(
                condition=models.Q(mac_address=Lower("mac_address")), name="port_mac_lower_case"
            ),
        ]

    def __str__(self) -> str:
        return self.name or str(self.id)


class IPAllocation(models.Model):
    """One fixed IP of a port. The unique constraint is the backstop of the
    allocator, which already picks under the subnet's row lock."""

    port = models.ForeignKey(Port, on_delete=models.CASCADE, related_name="fixed_ips")
    subnet = models.ForeignKey(Subnet, on_delete=models.PROTECT, related_name="allocations")
    # inet on PostgreSQL; canonical text elsewhere.
    address = models.GenericIPAddressField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["subnet", "address"], name="ip_once_per_subnet"),
        ]

    def __str__(self) -> str:
        return self.address


class Datapath(models.TextChoices):
    SYSTEM = "system"
    # OVS-DPDK: ports are plugged as vhost-user sockets.
    NETDEV = "netdev"


class HostAgent(models.Model):
    """What one host reports it can plug (Neutron's agents, one per host).

    Physical networks and vnic types are rows of their own so that the
    scheduler can filter hosts on them in SQL."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    host = models.CharField(max_length=255, unique=True)
    datapath_type = models.CharField(max_length=8, choices=Datapath.choices, default="system")
    # OVS interface types, e.g. ["dpdkvhostuser", "dpdkvhostuserclient"].
    interface_types = models.JSONField(default=list, blank=True)
    # Firewall in a Linux bridge between VM and OVS (iptables hybrid plug).
    ovs_hybrid_plug = models.BooleanField(default=False)
    bridge_name = models.CharField(max_length=64, default="br-int")
    tunnel_types = models.JSONField(default=list, blank=True)
    admin_state_up = models.BooleanField(default=True)
    heartbeat_at = models.DateTimeField(db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["host"]

    def __str__(self) -> str:
        return self.host


class HostPhysnet(models.Model):
    """A physical network the host is wired to, and how: the OVS bridge, the
    SR-IOV physical function or the macvtap interface that carries it."""

    agent = models.ForeignKey(HostAgent, on_delete=models.CASCADE, related_name="physnets")
    physical_network = models.CharField(max_length=64)
    bridge = models.CharField(max_length=64, blank=True)
    sriov_interface = models.CharField(max_length=64, blank=True)
    macvtap_interface = models.CharField(max_length=64, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["agent", "physical_network"], name="host_physnet_once"),
        ]
        indexes = [models.Index(fields=["physical_network", "agent"])]

    def __str__(self) -> str:
        return f"{self.agent.host}:{self.physical_network}"


class HostVnicType(models.Model):
    agent = models.ForeignKey(HostAgent, on_delete=models.CASCADE, related_name="vnic_types")
    vnic_type = models.CharField(max_length=16, choices=VnicType.choices)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["agent", "vnic_type"], name="host_vnic_type_once"),
        ]

    def __str__(self) -> str:
        return f"{self.agent.host}:{self.vnic_type}"


class BaremetalNic(models.Model):
    """A fixed NIC of a baremetal host: its MAC and where it is cabled."""

    agent = models.ForeignKey(HostAgent, on_delete=models.CASCADE, related_name="baremetal_nics")
    mac_address = models.CharField(max_length=17, unique=True)
    physical_network = models.CharField(max_length=64)
    switch_id = models.CharField(max_length=64, blank=True)
    switch_port = models.CharField(max_length=64, blank=True)
    switch_info = models.CharField(max_length=255, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(mac_address=Lower("mac_address")), name="baremetal_nic_mac_lower"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.agent.host}:{self.mac_address}"


class AddressHold(models.Model):
    """An address of a subnet promised to a holder over [start_at, end_at):
    a lease's reservation (the holder's id is opaque here: networking knows
    nothing of leases). No port but the holder's may take it from the
    moment it is held until the hold ends; the holder's ports take it while
    the hold runs. On PostgreSQL an exclusion constraint (migration 0002)
    forbids two overlapping holds of one address; everywhere the holding
    service checks under the subnet's row lock."""

    # Deleting a subnet is refused while a hold runs or is to come
    # (networking.services); ended holds go with it.
    subnet = models.ForeignKey(Subnet, on_delete=models.CASCADE, related_name="holds")
    address = models.GenericIPAddressField()
    holder = models.UUIDField(db_index=True)
    project = models.ForeignKey(
        "identity.Project", on_delete=models.CASCADE, related_name="address_holds"
    )
    start_at = models.DateTimeField()
    end_at = models.DateTimeField()

    class Meta:
        ordering = ["subnet", "address"]
        indexes = [models.Index(fields=["subnet", "address", "end_at"])]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(end_at__gt=models.F("start_at")), name="hold_ends_after_start"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.address} for {self.holder}"
