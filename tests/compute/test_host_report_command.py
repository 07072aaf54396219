"""`manage.py host_report`: upsert, heartbeat, clear errors."""

import io

import pytest
from django.core.management import CommandError, call_command

from compute.models import Host
from networking.models import BaremetalNic, HostAgent


def test_report_then_heartbeat(db):
    call_command(
        "host_report",
        "n1",
        "--physnet",
        "physnet1:br-x",
        "--sriov",
        "physnet1:ens1",
        "--vnic-type",
        "normal",
        "--vnic-type",
        "direct",
        "--vcpus",
        "8",
        stdout=io.StringIO(),
    )
    host = Host.objects.get(name="n1")
    first_beat = host.last_heartbeat
    agent = HostAgent.objects.get(host="n1")
    link = agent.physnets.get()
    assert (link.physical_network, link.bridge, link.sriov_interface) == (
        "physnet1",
        "br-x",
        "ens1",
    )
    assert sorted(agent.vnic_types.values_list("vnic_type", flat=True)) == ["direct", "normal"]
    call_command(
        "host_report",
        "n1",
        "--physnet",
        "physnet1:br-x",
        "--sriov",
        "physnet1:ens1",
        "--vnic-type",
        "normal",
        "--vnic-type",
        "direct",
        "--vcpus",
        "8",
        stdout=io.StringIO(),
    )
    host.refresh_from_db()
    assert host.last_heartbeat > first_beat and Host.objects.count() == 1


def test_baremetal_node_with_nics(db):
    call_command(
        "host_report",
        "bm1",
        "--baremetal",
        "--baremetal-nic",
        "52:54:00:AA:00:01@provision@sw1@Eth1/1",
        stdout=io.StringIO(),
    )
    nic = BaremetalNic.objects.get()
    assert (nic.mac_address, nic.switch_port) == ("52:54:00:aa:00:01", "Eth1/1")
    assert Host.objects.get(name="bm1").baremetal


@pytest.mark.parametrize(
    "args",
    [
        ["--baremetal-nic", "nomac"],
        ["--capabilities", "{not json"],
        ["--virt-driver", "xen"],
        ["--vcpus", "-1"],
        ["--vnic-type", "warp"],
    ],
)
def test_malformed_reports_are_clear_errors(db, args):
    with pytest.raises(CommandError):
        call_command("host_report", "bad", *args, stdout=io.StringIO())
    assert not Host.objects.filter(name="bad").exists()
