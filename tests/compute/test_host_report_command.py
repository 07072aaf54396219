"""`manage.py host_report`: upsert, heartbeat, clear errors."""

import io
import json

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


def write_lines(path, *lines) -> str:
    path.write_text("\n".join(json.dumps(x) if isinstance(x, dict) else x for x in lines) + "\n")
    return str(path)


def test_bulk_report_from_json_lines(db, tmp_path):
    hosts = write_lines(
        tmp_path / "hosts.jsonl",
        {
            "name": "c1",
            "vcpus": 8,
            "physnet": ["physnet1:br-x", "physnet2"],
            "capabilities": {"node_type": "gpu"},
        },
        "",  # blank lines are skipped
        {
            "name": "c2",
            "virt_driver": "fake",
            "datapath": "netdev",
            "interface-type": "dpdkvhostuser",
        },
        {"name": "bm1", "baremetal": True, "baremetal_nic": "52:54:00:AA:00:01@provision"},
    )
    out = io.StringIO()
    call_command("host_report", "--from-file", hosts, "-v", "2", stdout=out)
    assert "reported 3 of 3 hosts" in out.getvalue()
    assert "reported c1: 8 vCPUs" in out.getvalue()
    c1 = Host.objects.get(name="c1")
    assert (c1.vcpus, c1.capabilities) == (8, {"node_type": "gpu"})
    assert sorted(HostAgent.objects.get(host="c1").physnets.values_list("bridge", flat=True)) == [
        "br-ex",
        "br-x",
    ]
    c2 = HostAgent.objects.get(host="c2")
    assert (c2.datapath_type, c2.interface_types) == ("netdev", ["dpdkvhostuser"])
    assert Host.objects.get(name="bm1").baremetal
    assert BaremetalNic.objects.get().physical_network == "provision"


def test_bulk_report_names_each_bad_line_and_reports_the_rest(db, tmp_path):
    hosts = write_lines(
        tmp_path / "hosts.jsonl",
        {"name": "good-1"},
        "{not json",
        {"name": "neg", "vcpus": -1},
        {"name": "typo", "vpcus": 8},
        {"vcpus": 8},
        {"name": "warp", "vnic_type": "warp"},
        '["a", "list"]',
        {"name": "good-2", "datapath": "netdev"},
    )
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError, match="6 of 8 lines failed"):
        call_command("host_report", "--from-file", hosts, stdout=out, stderr=err)
    assert sorted(Host.objects.values_list("name", flat=True)) == ["good-1", "good-2"]
    assert "reported 2 of 8 hosts" in out.getvalue()
    errors = err.getvalue().splitlines()
    assert [e.split(":")[1] for e in errors] == ["2", "3", "4", "5", "6", "7"]
    assert errors[0].startswith(f"{hosts}:2: Expecting property name")
    assert "vcpus must be an integer >= 0" in errors[1]
    assert "unrecognized arguments: --vpcus 8" in errors[2]
    assert "a host name is needed" in errors[3]
    assert "Unknown vnic types warp; use one of: normal, direct, macvtap, baremetal." in errors[4]
    assert "expected a JSON object" in errors[5]


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "give a host name, or --from-file"),
        (["n1", "--from-file", "hosts.jsonl"], "not both"),
        (["--from-file", "/nonexistent/hosts.jsonl"], "cannot read /nonexistent/hosts.jsonl"),
    ],
)
def test_bulk_report_usage_errors(db, args, message):
    with pytest.raises(CommandError, match=message):
        call_command("host_report", *args, stdout=io.StringIO())


class Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("stderr, shown", [(Terminal(), True), (io.StringIO(), False)])
def test_bulk_report_progress_bar_only_on_a_terminal(db, tmp_path, stderr, shown):
    hosts = write_lines(tmp_path / "hosts.jsonl", *({"name": f"c{i}"} for i in range(3)))
    call_command("host_report", "--from-file", hosts, stdout=io.StringIO(), stderr=stderr)
    assert ("reporting hosts from" in stderr.getvalue()) is shown
    assert Host.objects.count() == 3
