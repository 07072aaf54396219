"""Virt drivers: start, stop and remove a host's instances, plugging the
VIFs networking bound as they were described.

A driver gets each VIF's vif_type and vif_details and must not guess (seed
004): a vif_type it does not know is a DriverError, which reschedules the
build on another host. Every Driver call is idempotent, so a redelivered
message does no harm.
"""

import atexit
import enum
import re
import threading
import time
import xml.etree.ElementTree as ET
from contextlib import suppress
from dataclasses import asdict, dataclass
from typing import NamedTuple, Protocol

from django.conf import settings


class DriverError(Exception):
    """The host could not do what was asked; a failed spawn tries another host."""


class PowerState(enum.IntEnum):
    """Nova's power state codes, shown as OS-EXT-STS:power_state."""

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
class Vif:
    port_id: str
    mac_address: str
    vif_type: str
    vif_details: dict
    network_id: str
    mtu: int = 1500


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
        """The request as JSON-ready data, to travel through the broker."""
        return asdict(self)

    @classmethod
    def from_message(cls, message: dict) -> "SpawnRequest":
        return cls(**{**message, "vifs": [Vif(**vif) for vif in message["vifs"]]})


class Spawned(NamedTuple):
    # libvirt: the defined domain's XML; fake: one line per VIF.
    driver_data: str
    power_state: int


class Driver(Protocol):
    def spawn(self, request: SpawnRequest) -> Spawned:
        """Start the instance; one already there is started if needed, never made twice."""

    def destroy(self, instance_id: str) -> None:
        """Stop the instance and remove it with its disk; an unknown one is a no-op."""

    def power(self, instance_id: str, action: PowerAction) -> int:
        """The PowerState after the action; an unknown instance is a DriverError."""

    def power_states(self) -> dict[str, int]:
        """Every berth instance this driver runs: instance id -> PowerState."""


def _tap_name(port_id: str) -> str:
    # Linux interface names are at most 15 characters (as Nova's "tap" + 11).
    return f"tap{port_id[:11]}"


class FakeDriver:
    """No hypervisor: a table of instances and their power states, shared
    by the threads of the process. Options per host: ``spawn_delay``
    (seconds) and ``spawn_error`` (fail every spawn with that message)."""

    PLUGGABLE = {"ovs", "vhostuser", "hw_veb", "macvtap", "other"}

    def __init__(self):
        self._lock = threading.Lock()
        self._states: dict[str, PowerState] = {}

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
        with self._lock:
            self._states[request.instance_id] = PowerState.RUNNING
        return Spawned(
            "\n".join(f"{vif.port_id} {vif.vif_type} {vif.mac_address}" for vif in request.vifs),
            PowerState.RUNNING,
        )

    def destroy(self, instance_id: str) -> None:
        with self._lock:
            self._states.pop(instance_id, None)

    def power(self, instance_id: str, action: PowerAction) -> int:
        with self._lock:
            state = self._states.get(instance_id)
            if state is None:
                raise DriverError(f"no instance {instance_id} on this host")
            if action == PowerAction.REBOOT and state != PowerState.RUNNING:
                # As libvirt: only a running guest can be asked to reboot.
                raise DriverError(f"instance {instance_id} is not running")
            state = PowerState.SHUTDOWN if action == PowerAction.STOP else PowerState.RUNNING
            self._states[instance_id] = state
            return state

    def power_states(self) -> dict[str, int]:
        with self._lock:
            return dict(self._states)


# The namespace of berth's element in a domain's <metadata>.
XMLNS = "https://berth.dev/xmlns/instance/1"
ET.register_namespace("berth", XMLNS)

# A PCI address as Nova and Neutron write a VF's pci_slot: domain:bus:slot.function.
_PCI_SLOT = re.compile(r"([0-9a-f]{4}):([0-9a-f]{2}):([0-9a-f]{2})\.([0-7])", re.IGNORECASE)


def _libvirt():
    """The libvirt module, imported on first use: the package is optional
    (hosts on the fake driver do without it)."""
    try:
        import libvirt
    except ImportError:
        raise DriverError("libvirt-python is not installed") from None
    # Errors reach berth as exceptions; libvirt would also print each one.
    libvirt.registerErrorHandler(lambda _context, _error: None, None)
    return libvirt


def _lookup(find, name):
    """find(name), or None when libvirt has no such domain or volume."""
    libvirt = _libvirt()
    try:
        return find(name)
    except libvirt.libvirtError as error:
        if error.get_error_code() in (libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_NO_STORAGE_VOL):
            return None
        raise


class LibvirtDriver:
    """One libvirt connection (URI), opened on first use and shared by the
    threads of the process. A berth instance is the domain named
    ``berth-<instance id>`` whose uuid is the instance's, with a qcow2 volume
    ``<instance id>.qcow2`` as its disk. Options per host: ``libvirt_uri``,
    ``libvirt_pool`` (else BERTH_LIBVIRT_POOL) and ``libvirt_domain_type``
    (else "test" on libvirt's test driver, "kvm" elsewhere)."""

    def __init__(self, uri: str):
        self.uri = uri
        self._lock = threading.Lock()
        self._conn = None

    def spawn(self, request: SpawnRequest) -> Spawned:
        # Rendered first: a VIF that cannot be plugged fails before anything is made.
        interfaces = [self.interface(vif) for vif in request.vifs]
        return self._run(self._spawn, request, interfaces)

    def destroy(self, instance_id: str) -> None:
        self._run(self._destroy, instance_id)

    def power(self, instance_id: str, action: PowerAction) -> int:
        return self._run(self._power, instance_id, PowerAction(action))

    def power_states(self) -> dict[str, int]:
        return self._run(self._power_states)

    def _run(self, operation, *args):
        """operation(libvirt, conn, *args), with libvirt's errors as
        DriverErrors. A connection that died (libvirtd restarted) is opened
        again once: every operation is idempotent, so redoing it is safe."""
        libvirt = _libvirt()
        for last_try in (False, True):
            conn = None
            try:
                conn = self._connection(libvirt)
                return operation(libvirt, conn, *args)
            except libvirt.libvirtError as error:
                died = error.get_error_code() in (
                    libvirt.VIR_ERR_INTERNAL_ERROR,
                    libvirt.VIR_ERR_NO_CONNECT,
                )
                if last_try or conn is None or not died or conn.isAlive():
                    raise DriverError(str(error)) from None
                with self._lock:
                    if self._conn is conn:
                        self._conn = None

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            with suppress(_libvirt().libvirtError):  # it may have died already
                conn.close()

    def _connection(self, libvirt):
        with self._lock:
            if self._conn is None:
                self._conn = libvirt.open(self.uri)
            return self._conn

    def _spawn(self, libvirt, conn, request: SpawnRequest, interfaces: list[ET.Element]):
        domain = _lookup(conn.lookupByUUIDString, request.instance_id)
        if domain is not None:  # spawned before (a redelivered message)
            if not domain.isActive():
                domain.create()
            return Spawned(domain.XMLDesc(0), self._state(libvirt, domain))
        options = request.driver_options
        pool = conn.storagePoolLookupByName(
            options.get("libvirt_pool") or settings.BERTH_LIBVIRT_POOL
        )
        domain_type = options.get("libvirt_domain_type") or (
            "test" if conn.getType().lower() == "test" else "kvm"
        )
        name = f"{request.instance_id}.qcow2"
        volume = _lookup(pool.storageVolLookupByName, name)
        # What this call made, undone if it fails: a retry on another host
        # must leave nothing behind here.
        undo = []
        try:
            if volume is None:
                volume = pool.createXML(_volume_xml(name, request.disk_gb), 0)
                undo.append(volume.delete)
            domain = conn.defineXML(
                _domain_xml(request, domain_type, pool.name(), name, interfaces)
            )
            undo.append(domain.undefine)
            domain.create()
        except libvirt.libvirtError:
            for step in reversed(undo):
                with suppress(libvirt.libvirtError):
                    step()
            raise
        return Spawned(domain.XMLDesc(0), self._state(libvirt, domain))

    def _destroy(self, libvirt, conn, instance_id: str) -> None:
        domain = _lookup(conn.lookupByUUIDString, instance_id)
        if domain is not None:
            if domain.isActive():
                domain.destroy()
            domain.undefine()
        # Looked for in every pool: the domain may be gone already, and which
        # pool its host used is an option of the spawn.
        for pool in conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE):
            volume = _lookup(pool.storageVolLookupByName, f"{instance_id}.qcow2")
            if volume is not None:
                volume.delete()

    def _power(self, libvirt, conn, instance_id: str, action: PowerAction) -> int:
        domain = _lookup(conn.lookupByUUIDString, instance_id)
        if domain is None:
            raise DriverError(f"no domain for instance {instance_id} on {self.uri}")
        running = domain.isActive()
        if action == PowerAction.START and not running:
            domain.create()
        elif action == PowerAction.STOP and running:
            self._shut_down(domain)
        elif action == PowerAction.REBOOT:
            domain.reboot(0)  # libvirt refuses it for a domain that is not running
        elif action == PowerAction.REBOOT_HARD:
            # As Nova's hard reboot, it also starts an instance that was off.
            if running:
                domain.reset(0)
            else:
                domain.create()
        return self._state(libvirt, domain)

    @staticmethod
    def _shut_down(domain) -> None:
        """Ask the guest to shut down (ACPI); pull the plug if it has not
        within BERTH_LIBVIRT_SHUTDOWN_TIMEOUT."""
        domain.shutdown()
        deadline = time.monotonic() + settings.BERTH_LIBVIRT_SHUTDOWN_TIMEOUT
        while domain.isActive() and time.monotonic() < deadline:
            time.sleep(0.5)
        if domain.isActive():
            domain.destroy()

    def _power_states(self, libvirt, conn) -> dict[str, int]:
        return {
            domain.UUIDString(): self._state(libvirt, domain)
            for domain in conn.listAllDomains(0)
            if domain.name().startswith("berth-")
        }

    @staticmethod
    def _state(libvirt, domain) -> PowerState:
        return {
            libvirt.VIR_DOMAIN_RUNNING: PowerState.RUNNING,
            libvirt.VIR_DOMAIN_BLOCKED: PowerState.RUNNING,
            libvirt.VIR_DOMAIN_PAUSED: PowerState.PAUSED,
            libvirt.VIR_DOMAIN_SHUTDOWN: PowerState.SHUTDOWN,
            libvirt.VIR_DOMAIN_SHUTOFF: PowerState.SHUTDOWN,
            libvirt.VIR_DOMAIN_CRASHED: PowerState.CRASHED,
            libvirt.VIR_DOMAIN_PMSUSPENDED: PowerState.SUSPENDED,
        }.get(domain.state()[0], PowerState.NOSTATE)

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
        # libvirt attaches a VF by its PCI address and refuses a hostdev
        # interface without one; berth does not choose VFs, so the binding
        # must name it.
        pci = _PCI_SLOT.fullmatch(str(details.get("pci_slot", "")))
        if pci is None:
            raise DriverError(
                f"hw_veb VIF {vif.port_id} lacks pci_slot (the VF's PCI address, 0000:81:00.1)"
            )
        domain, bus, slot, function = (f"0x{part}" for part in pci.groups())
        element = ET.Element("interface", type="hostdev", managed="yes")
        ET.SubElement(element, "driver", name="vfio")
        ET.SubElement(
            ET.SubElement(element, "source"),
            "address",
            type="pci",
            domain=domain,
            bus=bus,
            slot=slot,
            function=function,
        )
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


def _volume_xml(name: str, disk_gb: int) -> str:
    volume = ET.Element("volume")
    ET.SubElement(volume, "name").text = name
    ET.SubElement(volume, "capacity", unit="GiB").text = str(disk_gb)
    ET.SubElement(ET.SubElement(volume, "target"), "format", type="qcow2")
    return ET.tostring(volume, encoding="unicode")


def _domain_xml(
    request: SpawnRequest, domain_type: str, pool: str, volume: str, interfaces: list[ET.Element]
) -> str:
    domain = ET.Element("domain", type=domain_type)
    ET.SubElement(domain, "name").text = f"berth-{request.instance_id}"
    ET.SubElement(domain, "uuid").text = request.instance_id
    # The instance's display name, for whoever reads the host's domains.
    berth = ET.SubElement(ET.SubElement(domain, "metadata"), f"{{{XMLNS}}}instance")
    ET.SubElement(berth, f"{{{XMLNS}}}name").text = request.instance_name
    ET.SubElement(domain, "memory", unit="KiB").text = str(request.memory_mb * 1024)
    ET.SubElement(domain, "vcpu").text = str(request.vcpus)
    ET.SubElement(ET.SubElement(domain, "os"), "type").text = "hvm"
    devices = ET.SubElement(domain, "devices")
    disk = ET.SubElement(devices, "disk", type="volume", device="disk")
    ET.SubElement(disk, "driver", name="qemu", type="qcow2")
    ET.SubElement(disk, "source", pool=pool, volume=volume)
    ET.SubElement(disk, "target", dev="vda", bus="virtio")
    devices.extend(interfaces)
    return ET.tostring(domain, encoding="unicode")


DRIVER_NAMES = ("fake", "libvirt")
_FAKE = FakeDriver()
# One driver, so one connection, per URI. setdefault keeps the first one
# made if threads race: a dict's operations are atomic.
_LIBVIRT: dict[str, LibvirtDriver] = {}


@atexit.register
def _close_connections() -> None:
    # Closed while libvirt is loaded: a connection left to the interpreter's
    # exit fails loudly in its own clean-up.
    for driver in _LIBVIRT.values():
        driver.close()


def driver_for(virt_driver: str, driver_options: dict) -> Driver:
    """The process's driver for a host's virt_driver and driver_options."""
    if virt_driver == "fake":
        return _FAKE
    if virt_driver == "libvirt":
        uri = driver_options.get("libvirt_uri") or settings.BERTH_LIBVIRT_URI
        return _LIBVIRT.setdefault(uri, LibvirtDriver(uri))
    raise DriverError(f"unknown virt driver {virt_driver!r}")
