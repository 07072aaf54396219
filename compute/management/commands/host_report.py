"""Report a host (upsert; a repeated report is a heartbeat)."""

import json

from django.core.management.base import BaseCommand, CommandError

from compute.services import HostReport, host_report
from config.errors import BerthError
from networking.services import HostNetworkReport


def physnet_link(text: str) -> tuple[str, dict]:
    """PHYSNET[:BRIDGE] -> (physnet, links); the bridge defaults to br-ex."""
    name, _, bridge = text.partition(":")
    if not name:
        raise ValueError(f"empty physical network in {text!r}")
    return name, {"bridge": bridge or "br-ex"}


def baremetal_nic(text: str) -> dict:
    """MAC@PHYSNET[@SWITCH_ID@SWITCH_PORT]"""
    parts = text.split("@")
    if len(parts) not in (2, 4):
        raise ValueError(f"expected MAC@PHYSNET[@SWITCH_ID@SWITCH_PORT], got {text!r}")
    nic = {"mac_address": parts[0], "physical_network": parts[1]}
    if len(parts) == 4:
        nic.update(switch_id=parts[2], switch_port=parts[3])
    return nic


class Command(BaseCommand):
    help = "Report a compute host and what it can plug; run it again as a heartbeat."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--vcpus", type=int, default=16)
        parser.add_argument("--ram", type=int, default=65536, help="MiB")
        parser.add_argument("--disk", type=int, default=1000, help="GB")
        parser.add_argument("--hypervisor-type", default="QEMU")
        parser.add_argument("--virt-driver", default="fake", help="fake or libvirt")
        parser.add_argument("--baremetal", action="store_true")
        parser.add_argument("--cpu-ratio", type=float, default=4.0)
        parser.add_argument("--ram-ratio", type=float, default=1.0)
        parser.add_argument("--disk-ratio", type=float, default=1.0)
        parser.add_argument("--service-version", type=int, default=2)
        parser.add_argument(
            "--physnet", action="append", default=[], metavar="PHYSNET[:BRIDGE]", help="repeatable"
        )
        parser.add_argument(
            "--sriov",
            action="append",
            default=[],
            metavar="PHYSNET:INTERFACE",
            help="an SR-IOV physical function on a physnet (repeatable)",
        )
        parser.add_argument("--vnic-type", action="append", default=[], help="repeatable")
        parser.add_argument("--datapath", choices=["system", "netdev"], default="system")
        parser.add_argument("--interface-type", action="append", default=[])
        parser.add_argument(
            "--baremetal-nic",
            action="append",
            default=[],
            metavar="MAC@PHYSNET[@SWITCH_ID@SWITCH_PORT]",
        )
        parser.add_argument("--capabilities", default="{}", help="JSON object")
        parser.add_argument("--driver-options", default="{}", help="JSON object")

    def handle(self, *args, **o):
        try:
            physnets = dict(physnet_link(p) for p in o["physnet"])
            for spec in o["sriov"]:
                physnet, _, interface = spec.partition(":")
                physnets.setdefault(physnet, {})["sriov_interface"] = interface
            nics = [baremetal_nic(n) for n in o["baremetal_nic"]]
            capabilities = json.loads(o["capabilities"])
            driver_options = json.loads(o["driver_options"])
        except (ValueError, json.JSONDecodeError) as error:
            raise CommandError(str(error)) from None
        vnic_types = o["vnic_type"] or (["baremetal"] if o["baremetal"] else ["normal"])
        report = HostReport(
            name=o["name"],
            vcpus=o["vcpus"],
            memory_mb=o["ram"],
            disk_gb=o["disk"],
            hypervisor_type=o["hypervisor_type"],
            virt_driver=o["virt_driver"],
            baremetal=o["baremetal"],
            cpu_allocation_ratio=o["cpu_ratio"],
            ram_allocation_ratio=o["ram_ratio"],
            disk_allocation_ratio=o["disk_ratio"],
            service_version=o["service_version"],
            capabilities=capabilities,
            driver_options=driver_options,
            network=HostNetworkReport(
                host=o["name"],
                physnets=physnets,
                vnic_types=vnic_types,
                datapath_type=o["datapath"],
                interface_types=o["interface_type"],
                baremetal_nics=nics,
            ),
        )
        try:
            host = host_report(report=report)
        except BerthError as error:
            raise CommandError(error.message) from None
        self.stdout.write(
            f"reported {host.name}: {host.vcpus} vCPUs, {host.memory_mb} MiB, {host.disk_gb} GB, "
            f"physnets {', '.join(sorted(physnets)) or '-'}"
        )
