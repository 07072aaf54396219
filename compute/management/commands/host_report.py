"""Report a host (upsert; a repeated report is a heartbeat), or many from a
file of JSON lines."""

import json

from django.core.management.base import BaseCommand, CommandError, CommandParser

from compute.services import HostReport, host_report
from config.errors import BerthError
from config.progress import progress_bar
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


def report_arguments(parser) -> None:
    """The options of one report, for the command line and for each line of
    a --from-file (so both are parsed, checked and defaulted alike)."""
    parser.add_argument("name", nargs="?")
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


def report_options(fields: dict) -> dict:
    """The options of one report given as a dict (a line of --from-file, an
    agent's report file): the keys are the options' names (virt_driver or
    virt-driver), a list repeats its option, true sets a flag, an object is
    given as JSON. Parsed, checked and defaulted as the command line is;
    ValueError (CommandError is one) if malformed."""
    if not isinstance(fields, dict):
        raise ValueError("expected a JSON object")
    fields = dict(fields)
    # The name first, where argparse's errors name the options after it.
    argv = [str(fields.pop("name", ""))]
    for key, value in fields.items():
        option = "--" + key.replace("_", "-")
        for item in value if isinstance(value, list) else [value]:
            if item is True:
                argv.append(option)
            elif item not in (False, None):
                text = json.dumps(item) if isinstance(item, dict) else str(item)
                argv += [option, text]
    parser = CommandParser(prog="host report", called_from_command_line=False, allow_abbrev=False)
    report_arguments(parser)
    return vars(parser.parse_args(argv))


def host_report_from(o: dict) -> HostReport:
    """The report the parsed options describe; ValueError if malformed."""
    if not o["name"]:
        raise ValueError("a host name is needed")
    physnets = dict(physnet_link(p) for p in o["physnet"])
    for spec in o["sriov"]:
        physnet, _, interface = spec.partition(":")
        physnets.setdefault(physnet, {})["sriov_interface"] = interface
    vnic_types = o["vnic_type"] or (["baremetal"] if o["baremetal"] else ["normal"])
    return HostReport(
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
        capabilities=json.loads(o["capabilities"]),
        driver_options=json.loads(o["driver_options"]),
        network=HostNetworkReport(
            host=o["name"],
            physnets=physnets,
            vnic_types=vnic_types,
            datapath_type=o["datapath"],
            interface_types=o["interface_type"],
            baremetal_nics=[baremetal_nic(n) for n in o["baremetal_nic"]],
        ),
    )


class Command(BaseCommand):
    help = (
        "Report a compute host and what it can plug; run it again as a heartbeat. "
        "With --from-file, report one host per line of a file of JSON objects whose keys "
        'are the options\' names, e.g. {"name": "c1", "vcpus": 8, "physnet": ["physnet1"]}.'
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--from-file",
            metavar="FILE",
            help="JSON lines, one host each; a bad line is reported and the rest go on",
        )
        report_arguments(parser)

    def handle(self, *args, from_file, verbosity, **o):
        if from_file is None:
            if not o["name"]:
                raise CommandError("give a host name, or --from-file")
            self.stdout.write(self.report(o))
        elif o["name"]:
            raise CommandError("give a host name or --from-file, not both")
        else:
            self.report_file(from_file, verbose=verbosity > 1)

    def report(self, o: dict) -> str:
        try:
            report = host_report_from(o)
            host = host_report(report=report)
        except ValueError as error:  # json.JSONDecodeError is one
            raise CommandError(str(error)) from None
        except BerthError as error:
            raise CommandError(error.message) from None
        return (
            f"reported {host.name}: {host.vcpus} vCPUs, {host.memory_mb} MiB, {host.disk_gb} GB, "
            f"physnets {', '.join(sorted(report.network.physnets)) or '-'}"
        )

    def report_file(self, path: str, *, verbose: bool) -> None:
        """Every line in its own transaction: a bad line is named with its
        number and skipped, the others are reported; the exit status says
        whether any failed."""
        try:
            with open(path, encoding="utf-8") as file:
                lines = [(n, line) for n, line in enumerate(file, 1) if line.strip()]
        except OSError as error:
            raise CommandError(f"cannot read {path}: {error.strerror}") from None
        reported, errors = [], []
        with progress_bar(self.stderr) as bar:
            task = bar.add_task(f"reporting hosts from {path}", total=len(lines))
            for number, line in lines:
                try:
                    reported.append(self.report(report_options(json.loads(line))))
                except (CommandError, ValueError) as error:
                    errors.append(f"{path}:{number}: {error}")
                bar.advance(task)
        if verbose:
            self.stdout.write("\n".join(reported))
        for message in errors:
            self.stderr.write(message)
        self.stdout.write(f"reported {len(reported)} of {len(lines)} hosts from {path}")
        if errors:
            raise CommandError(f"{len(errors)} of {len(lines)} lines failed; see above")
