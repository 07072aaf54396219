"""Virt drivers: plug the VIFs networking bound, as they were described.

A driver gets each VIF's vif_type and vif_details and must not guess (seed
004): a vif_type it does not know is a DriverError, which reschedules the
build on another host.
"""

import enum
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from typing import NamedTuple


class DriverError(Exception):
    """The host could not start the instance; the build tries another host."""


@dataclass(frozen=True)
class Vif:
    port_id: str
    mac_address: str
    vif_type: str
    vif_details: dict
    network_id: str
    mtu: int = 1500


class PowerState(enum.IntEnum):
    NOSTATE = 0
    RUNNING = 1
    PAUSED = 3
    SHUTDOWN = 4
    CRASHED = 6
    SUSPENDED = 7


class PowerAction(enum.StrEnum):
    START = "start"
    STOP = "stop"
    REBOOT = "reboot"
    REBOOT_HARD = "reboot_hard"


@dataclass(frozen=True)
class SpawnRequest:
    instance_id: str
    instance_name: str
    host: str
    vcpus: int
    memory_mb: int
    disk_gb: int
    vifs: list[Vif]
    driver_options: dict

    def to_message(self) -> dict:
        return asdict(self)

    @classmethod
    def from_message(cls, message: dict) -> "SpawnRequest":
        return cls(**{**message, "vifs": [Vif(**vif) for vif in message["vifs"]]})


class Spawned(NamedTuple):
    driver_data: str
    power_state: int


def _tap_name(port_id: str) -> str:
    # Linux interface names are at most 15 characters (as Nova's "tap" + 11).
    return f"tap{port_id[:11]}"


class FakeDriver:
    """No hypervisor. Options per host: ``spawn_delay`` (seconds) and
    ``spawn_error`` (fail every spawn with that message)."""

    PLUGGABLE = {"ovs", "vhostuser", "hw_veb", "macvtap", "other"}

    def __init__(self):
        self.lock = threading.Lock()
        self.domains: dict[str, int] = {}

    def power_states(self) -> dict[str, int]:
        with self.lock:
            return dict(self.domains)

    def destroy(self, instance_id: str) -> None:
        with self.lock:
            self.domains.pop(instance_id, None)

    def power(self, instance_id: str, action: PowerAction) -> int:
        with self.lock:
            if instance_id not in self.domains:
                raise DriverError(f"no domain for instance {instance_id}")
            state = PowerState.SHUTDOWN if action == PowerAction.STOP else PowerState.RUNNING
            self.domains[instance_id] = state
            return state

    def spawn(self, request: SpawnRequest) -> Spawned:
        for vif in request.vifs:
            if vif.vif_type not in self.PLUGGABLE:
                raise DriverError(f"fake driver cannot plug vif_type {vif.vif_type!r}")
        delay = float(request.driver_options.get("spawn_delay", 0))
        if delay:
            time.sleep(delay)
        error = request.driver_options.get("spawn_error")
        if error:
            raise DriverError(str(error))
        with self.lock:
            self.domains[request.instance_id] = PowerState.RUNNING
        data = "\n".join(f"{vif.port_id} {vif.vif_type} {vif.mac_address}" for vif in request.vifs)
        return Spawned(data, PowerState.RUNNING)


class LibvirtDriver:
    """Renders each VIF's libvirt ``<interface>`` element from vif_type and
    vif_details. berth keeps the rendered domain interfaces on the instance
    (visible to admins); it does not talk to a libvirt daemon."""

    def spawn(self, request: SpawnRequest) -> Spawned:
        return Spawned(
            "\n".join(ET.tostring(self.interface(vif), encoding="unicode") for vif in request.vifs),
            PowerState.RUNNING,
        )

    def interface(self, vif: Vif) -> ET.Element:
        render = getattr(self, f"_render_{vif.vif_type}", None)
        if render is None:
            raise DriverError(f"libvirt driver cannot plug vif_type {vif.vif_type!r}")
        element = render(vif, vif.vif_details)
        element.insert(0, ET.Element("mac", address=vif.mac_address))
        return element

    @staticmethod
    def _virtio(element: ET.Element, vif: Vif) -> ET.Element:
        ET.SubElement(element, "model", type="virtio")
        ET.SubElement(element, "mtu", size=str(vif.mtu))
        return element

    def _render_ovs(self, vif: Vif, details: dict) -> ET.Element:
        element = ET.Element("interface", type="bridge")
        if details.get("ovs_hybrid_plug"):
            # Security groups as iptables on a Linux bridge between the VM
            # and OVS: libvirt plugs into that bridge, os-vif wires the rest.
            ET.SubElement(element, "source", bridge=f"qbr{vif.port_id[:11]}")
        else:
            ET.SubElement(element, "source", bridge=details.get("bridge_name", "br-int"))
            virtualport = ET.SubElement(element, "virtualport", type="openvswitch")
            ET.SubElement(virtualport, "parameters", interfaceid=vif.port_id)
        ET.SubElement(element, "target", dev=_tap_name(vif.port_id))
        return self._virtio(element, vif)

    def _render_vhostuser(self, vif: Vif, details: dict) -> ET.Element:
        try:
            path, mode = details["vhostuser_socket"], details["vhostuser_mode"]
        except KeyError as missing:
            raise DriverError(f"vhostuser VIF {vif.port_id} lacks {missing}") from None
        element = ET.Element("interface", type="vhostuser")
        ET.SubElement(element, "source", type="unix", path=path, mode=mode)
        return self._virtio(element, vif)

    def _render_hw_veb(self, vif: Vif, details: dict) -> ET.Element:
        element = ET.Element("interface", type="hostdev", managed="yes")
        ET.SubElement(element, "driver", name="vfio")
        vlan = details.get("vlan", "0")
        if vlan not in ("0", 0):
            ET.SubElement(ET.SubElement(element, "vlan"), "tag", id=str(vlan))
        return element

    def _render_macvtap(self, vif: Vif, details: dict) -> ET.Element:
        try:
            source = details["macvtap_source"]
        except KeyError:
            raise DriverError(f"macvtap VIF {vif.port_id} lacks macvtap_source") from None
        element = ET.Element("interface", type="direct")
        ET.SubElement(element, "source", dev=source, mode=details.get("macvtap_mode", "bridge"))
        return self._virtio(element, vif)


DRIVERS = {"fake": FakeDriver(), "libvirt": LibvirtDriver()}
DRIVER_NAMES = tuple(DRIVERS)


def driver_for(virt_driver: str, driver_options: dict):
    return DRIVERS[virt_driver]
