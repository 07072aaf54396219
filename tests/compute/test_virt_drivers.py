"""The virt drivers' contract, through the Driver interface: the fake
driver, and the libvirt driver on libvirt's test driver (a real connection
without a hypervisor). The test driver's state belongs to the process and is
shared by every connection to it, so each test makes its own instances and
destroys them."""

import json
import sys
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import pytest

from compute.virt import (
    XMLNS,
    Driver,
    DriverError,
    LibvirtDriver,
    PowerAction,
    PowerState,
    SpawnRequest,
    Vif,
    driver_for,
)
from networking.binding import VHOSTUSER_SOCKET_DIR

TEST_URI = "test:///default"
# The test driver's only storage pool.
ON_TEST_DRIVER = {"libvirt_uri": TEST_URI, "libvirt_pool": "default-pool"}


def vif(vif_type: str, details: dict, mac: str) -> Vif:
    return Vif(
        port_id=str(uuid.uuid4()),
        mac_address=mac,
        vif_type=vif_type,
        vif_details=details,
        network_id=str(uuid.uuid4()),
        mtu=1450,
    )


def every_vif_type() -> list[Vif]:
    return [
        vif("ovs", {"bridge_name": "br-int"}, "fa:16:3e:00:00:01"),
        vif("ovs", {"ovs_hybrid_plug": True}, "fa:16:3e:00:00:02"),
        vif(
            "vhostuser",
            {"vhostuser_socket": f"{VHOSTUSER_SOCKET_DIR}/vhu1", "vhostuser_mode": "server"},
            "fa:16:3e:00:00:03",
        ),
        vif("hw_veb", {"vlan": "100", "pci_slot": "0000:81:00.1"}, "fa:16:3e:00:00:04"),
        vif(
            "macvtap", {"macvtap_source": "eth1.100", "macvtap_mode": "bridge"}, "fa:16:3e:00:00:05"
        ),
    ]


@dataclass
class Host:
    """One host's driver; the instances a test spawns on it are destroyed after."""

    driver: Driver
    options: dict
    instances: list[str] = field(default_factory=list)

    def request(self, vifs=(), **changes) -> SpawnRequest:
        instance_id = str(uuid.uuid4())
        self.instances.append(instance_id)
        fields = {
            "instance_id": instance_id,
            "instance_name": "web 1",
            "host": "h1",
            "vcpus": 2,
            "memory_mb": 512,
            "disk_gb": 1,
            "vifs": list(vifs),
            "driver_options": self.options,
        }
        return SpawnRequest(**{**fields, **changes})

    def spawn(self, vifs=(), **changes) -> str:
        request = self.request(vifs, **changes)
        self.driver.spawn(request)
        return request.instance_id


def _host(virt_driver: str, options: dict):
    host = Host(driver_for(virt_driver, options), options)
    yield host
    for instance_id in host.instances:
        host.driver.destroy(instance_id)


@pytest.fixture(params=["fake", pytest.param("libvirt", marks=pytest.mark.libvirt)])
def host(request):
    yield from _host(request.param, {} if request.param == "fake" else ON_TEST_DRIVER)


@pytest.fixture
def libvirt_host():
    yield from _host("libvirt", ON_TEST_DRIVER)


@pytest.fixture
def conn():
    import libvirt

    return libvirt.open(TEST_URI)


def volume_names(conn) -> list[str]:
    return conn.storagePoolLookupByName("default-pool").listVolumes()


def domain_state(conn, instance_id: str) -> int:
    return conn.lookupByUUIDString(instance_id).state()[0]


# The contract both drivers keep.


def test_spawn_runs_the_instance(host):
    request = host.request(every_vif_type())
    spawned = host.driver.spawn(request)
    assert spawned.power_state == PowerState.RUNNING
    assert host.driver.power_states()[request.instance_id] == PowerState.RUNNING


def test_spawning_twice_is_one_instance(host):
    request = host.request(every_vif_type())
    first = host.driver.spawn(request)
    again = host.driver.spawn(request)
    assert again == first
    assert host.driver.power_states()[request.instance_id] == PowerState.RUNNING


def test_destroy_removes_the_instance_and_is_idempotent(host):
    instance_id = host.spawn()
    host.driver.destroy(instance_id)
    host.driver.destroy(instance_id)
    host.driver.destroy(str(uuid.uuid4()))
    assert instance_id not in host.driver.power_states()
    with pytest.raises(DriverError):
        host.driver.power(instance_id, PowerAction.START)


def test_power_actions(host):
    instance_id = host.spawn()
    power = host.driver.power
    assert power(instance_id, PowerAction.STOP) == PowerState.SHUTDOWN
    assert power(instance_id, PowerAction.STOP) == PowerState.SHUTDOWN
    assert host.driver.power_states()[instance_id] == PowerState.SHUTDOWN
    with pytest.raises(DriverError, match="not running"):
        power(instance_id, PowerAction.REBOOT)
    assert power(instance_id, PowerAction.START) == PowerState.RUNNING
    assert power(instance_id, PowerAction.START) == PowerState.RUNNING
    assert power(instance_id, PowerAction.REBOOT) == PowerState.RUNNING
    assert power(instance_id, PowerAction.REBOOT_HARD) == PowerState.RUNNING
    power(instance_id, PowerAction.STOP)
    # As Nova's hard reboot: it also starts an instance that was off.
    assert power(instance_id, PowerAction.REBOOT_HARD) == PowerState.RUNNING
    assert host.driver.power_states()[instance_id] == PowerState.RUNNING


def test_power_on_an_unknown_instance_is_a_driver_error(host):
    with pytest.raises(DriverError):
        host.driver.power(str(uuid.uuid4()), PowerAction.START)


def test_an_unknown_vif_type_fails_the_spawn_and_leaves_nothing(host):
    request = host.request([vif("vrouter", {}, "fa:16:3e:00:00:09")])
    with pytest.raises(DriverError, match="cannot plug vif_type 'vrouter'"):
        host.driver.spawn(request)
    assert request.instance_id not in host.driver.power_states()


def test_a_spawn_request_travels_as_json():
    request = Host(driver_for("fake", {}), {"spawn_delay": 0}).request(every_vif_type())
    message = json.loads(json.dumps(request.to_message()))
    assert SpawnRequest.from_message(message) == request


def test_drivers_are_made_once_per_process():
    assert driver_for("fake", {}) is driver_for("fake", {"spawn_delay": 1})
    assert driver_for("libvirt", ON_TEST_DRIVER) is driver_for("libvirt", {"libvirt_uri": TEST_URI})
    assert driver_for("libvirt", {}) is not driver_for("libvirt", ON_TEST_DRIVER)


def test_the_fake_drivers_spawn_error_fails_the_spawn():
    host = Host(driver_for("fake", {}), {"spawn_error": "disk on fire"})
    request = host.request()
    with pytest.raises(DriverError, match="disk on fire"):
        host.driver.spawn(request)
    assert request.instance_id not in host.driver.power_states()


def test_without_libvirt_python_only_the_libvirt_driver_fails(monkeypatch):
    monkeypatch.setitem(sys.modules, "libvirt", None)  # import libvirt fails
    with pytest.raises(DriverError, match="libvirt-python is not installed"):
        LibvirtDriver(TEST_URI).power_states()
    fake = Host(driver_for("fake", {}), {})
    request = fake.request()
    assert fake.driver.spawn(request).power_state == PowerState.RUNNING
    fake.driver.destroy(request.instance_id)


# The libvirt driver's domains, as libvirt sees them.


@pytest.mark.libvirt
def test_spawn_defines_the_domain_berth_asked_for(libvirt_host, conn):
    vifs = every_vif_type()
    request = libvirt_host.request(vifs, vcpus=3, memory_mb=768, disk_gb=2)
    spawned = libvirt_host.driver.spawn(request)
    domain = conn.lookupByUUIDString(request.instance_id)
    assert domain.isActive()
    xml = ET.fromstring(domain.XMLDesc(0))
    assert spawned.driver_data == domain.XMLDesc(0)
    assert xml.get("type") == "test"
    assert xml.findtext("name") == f"berth-{request.instance_id}"
    assert xml.findtext("uuid") == request.instance_id
    assert xml.findtext(f"metadata/{{{XMLNS}}}instance/{{{XMLNS}}}name") == "web 1"
    assert xml.findtext("vcpu") == "3"
    assert (xml.find("memory").get("unit"), xml.findtext("memory")) == ("KiB", str(768 * 1024))
    disk = xml.find("devices/disk")
    assert disk.find("source").attrib == {
        "pool": "default-pool",
        "volume": f"{request.instance_id}.qcow2",
    }
    assert disk.find("target").attrib == {"dev": "vda", "bus": "virtio"}
    volume = conn.storagePoolLookupByName("default-pool").storageVolLookupByName(
        f"{request.instance_id}.qcow2"
    )
    assert volume.info()[1] == 2 * 1024**3

    interfaces = xml.findall("devices/interface")
    assert [i.find("mac").get("address") for i in interfaces] == [v.mac_address for v in vifs]
    assert [i.get("type") for i in interfaces] == [
        "bridge",
        "bridge",
        "vhostuser",
        "hostdev",
        "direct",
    ]
    ovs, hybrid, vhostuser, hw_veb, macvtap = interfaces
    assert ovs.find("source").get("bridge") == "br-int"
    assert ovs.find("virtualport/parameters").get("interfaceid") == vifs[0].port_id
    assert ovs.find("target").get("dev") == f"tap{vifs[0].port_id[:11]}"
    assert ovs.find("mtu").get("size") == "1450"
    assert hybrid.find("source").get("bridge") == f"qbr{vifs[1].port_id[:11]}"
    assert hybrid.find("virtualport") is None
    assert vhostuser.find("source").attrib == {
        "type": "unix",
        "path": f"{VHOSTUSER_SOCKET_DIR}/vhu1",
        "mode": "server",
    }
    assert hw_veb.get("managed") == "yes"
    assert hw_veb.find("source/address").attrib == {
        "type": "pci",
        "domain": "0x0000",
        "bus": "0x81",
        "slot": "0x00",
        "function": "0x1",
    }
    assert hw_veb.find("vlan/tag").get("id") == "100"
    assert macvtap.find("source").attrib == {"dev": "eth1.100", "mode": "bridge"}


@pytest.mark.libvirt
def test_spawning_again_starts_the_domain_it_defined(libvirt_host, conn):
    request = libvirt_host.request(every_vif_type())
    libvirt_host.driver.spawn(request)
    conn.lookupByUUIDString(request.instance_id).destroy()
    assert libvirt_host.driver.spawn(request).power_state == PowerState.RUNNING
    names = [domain.name() for domain in conn.listAllDomains(0)]
    assert names.count(f"berth-{request.instance_id}") == 1
    assert volume_names(conn).count(f"{request.instance_id}.qcow2") == 1


@pytest.mark.libvirt
def test_destroy_removes_the_domain_and_its_volume(libvirt_host, conn):
    instance_id = libvirt_host.spawn(every_vif_type())
    libvirt_host.driver.destroy(instance_id)
    assert f"berth-{instance_id}" not in [domain.name() for domain in conn.listAllDomains(0)]
    assert f"{instance_id}.qcow2" not in volume_names(conn)


@pytest.mark.libvirt
def test_power_actions_change_the_domains_state(libvirt_host, conn):
    import libvirt

    instance_id = libvirt_host.spawn()
    power = libvirt_host.driver.power
    power(instance_id, PowerAction.STOP)
    assert domain_state(conn, instance_id) == libvirt.VIR_DOMAIN_SHUTOFF
    power(instance_id, PowerAction.START)
    assert domain_state(conn, instance_id) == libvirt.VIR_DOMAIN_RUNNING
    power(instance_id, PowerAction.REBOOT)
    assert domain_state(conn, instance_id) == libvirt.VIR_DOMAIN_RUNNING
    power(instance_id, PowerAction.REBOOT_HARD)
    assert domain_state(conn, instance_id) == libvirt.VIR_DOMAIN_RUNNING
    conn.lookupByUUIDString(instance_id).suspend()
    assert libvirt_host.driver.power_states()[instance_id] == PowerState.PAUSED


@pytest.mark.libvirt
def test_power_states_lists_berths_domains_only(libvirt_host, conn):
    instance_id = libvirt_host.spawn()
    states = libvirt_host.driver.power_states()
    assert states[instance_id] == PowerState.RUNNING
    # The test driver's own domain, named "test", is not berth's.
    assert conn.lookupByName("test").UUIDString() not in states


@pytest.mark.libvirt
def test_a_libvirt_failure_is_a_driver_error_with_its_message(libvirt_host, conn):
    request = libvirt_host.request(driver_options={**ON_TEST_DRIVER, "libvirt_pool": "nowhere"})
    with pytest.raises(DriverError, match="no storage pool with matching name 'nowhere'"):
        libvirt_host.driver.spawn(request)
    assert request.instance_id not in libvirt_host.driver.power_states()


@pytest.mark.libvirt
def test_a_failed_spawn_removes_what_it_made(libvirt_host, conn):
    # libvirt refuses the domain after the volume was made.
    request = libvirt_host.request(
        driver_options={**ON_TEST_DRIVER, "libvirt_domain_type": "nonsense"}
    )
    with pytest.raises(DriverError, match="nonsense"):
        libvirt_host.driver.spawn(request)
    assert request.instance_id not in libvirt_host.driver.power_states()
    assert f"{request.instance_id}.qcow2" not in volume_names(conn)


@pytest.mark.libvirt
def test_an_unpluggable_vif_leaves_no_domain_or_volume(libvirt_host, conn):
    request = libvirt_host.request([vif("vrouter", {}, "fa:16:3e:00:00:09")])
    with pytest.raises(DriverError):
        libvirt_host.driver.spawn(request)
    assert request.instance_id not in libvirt_host.driver.power_states()
    assert f"{request.instance_id}.qcow2" not in volume_names(conn)


@pytest.mark.libvirt
def test_an_sriov_vif_needs_the_vfs_pci_address(libvirt_host):
    request = libvirt_host.request([vif("hw_veb", {"vlan": "100"}, "fa:16:3e:00:00:04")])
    with pytest.raises(DriverError, match="lacks pci_slot"):
        libvirt_host.driver.spawn(request)


@pytest.mark.libvirt
def test_a_connection_that_died_is_opened_again(monkeypatch):
    import libvirt

    class Dead(libvirt.libvirtError):
        def get_error_code(self):
            return libvirt.VIR_ERR_NO_CONNECT

    class DeadConnection:
        def isAlive(self):
            return 0

        def listAllDomains(self, flags):
            raise Dead("client socket is closed")

    opened = []
    real_open = libvirt.open

    def open_(uri):
        opened.append(uri)
        return DeadConnection() if len(opened) == 1 else real_open(uri)

    monkeypatch.setattr(libvirt, "open", open_)
    driver = LibvirtDriver(TEST_URI)
    assert isinstance(driver.power_states(), dict)
    assert opened == [TEST_URI, TEST_URI]
    driver.power_states()
    assert len(opened) == 2
