"""Run berth's agent for one host, on that host (compute.agent says what it
does). It needs CELERY_BROKER_URL and no database."""

import json
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from compute.agent import Reporter
from compute.management.commands.host_report import (
    host_report_from,
    report_arguments,
    report_options,
)
from compute.tasks import host_queue
from config.celery import app


def report_from_file(path: Path) -> dict:
    """The host report in ``path``: one JSON object whose keys are
    host_report's options, as a line of ``host_report --from-file``;
    ValueError if malformed."""
    options = report_options(json.loads(path.read_text(encoding="utf-8")))
    return host_report_from(options).to_message()


class Command(BaseCommand):
    help = (
        "Run the agent of one host: serve its queue (spawn, power actions, delete) "
        "through its virt driver, and report the host, its heartbeat and its domains. "
        "The host is described by the same options as host_report, or by --report-file "
        "(one JSON object, re-read at every heartbeat: edit it and the change is reported)."
    )
    # The agent has no database to check.
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("--report-file", type=Path, metavar="FILE")
        parser.add_argument(
            "--concurrency", type=int, default=4, help="spawns and actions run at once (threads)"
        )
        parser.add_argument("--loglevel", default="info")
        parser.add_argument("--quiet", action="store_true", help="no start-up banner")
        report_arguments(parser)

    def handle(self, *args, report_file, concurrency, loglevel, quiet, **o):
        if settings.BERTH_ROLE != "agent":
            raise CommandError("run the agent as `manage.py agent` (BERTH_ROLE=agent)")
        if report_file is not None:
            if o["name"]:
                raise CommandError("give a host name or --report-file, not both")

            def load() -> dict:
                return report_from_file(report_file)

        else:
            try:
                report = host_report_from(o).to_message()
            except ValueError as error:
                raise CommandError(str(error)) from None

            def load() -> dict:
                return report

        try:
            reporter = Reporter(load)
        except (OSError, ValueError) as error:
            raise CommandError(f"cannot read the host report: {error}") from None
        # One process, threads: a libvirt connection (and the test driver's
        # whole hypervisor) is per process, so every task must share it.
        worker = app.Worker(
            hostname=f"agent@{reporter.host}",
            queues=[host_queue(reporter.host)],
            pool_cls="threads",
            concurrency=concurrency,
            loglevel=loglevel,
            quiet=quiet,
            without_mingle=True,
            without_gossip=True,
            berth_agent=reporter,
        )
        worker.start()
        raise SystemExit(worker.exitcode)
