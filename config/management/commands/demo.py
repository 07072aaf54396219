"""Set up a demo cloud and run berth's processes on 127.0.0.1.

Runs on whatever the settings say: with nothing set, SQLite and the
filesystem broker (the embedded default), so a newcomer needs nothing
installed. API, worker and beat are separate processes, exactly as in
production.
"""

import json
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from config import demo
from config.auth import DEMO_USER
from config.celery import WORKER_POOLS
from config.management.commands._progress import progress_bar
from config.services import membership_ensure, token_create

ROOT = Path(settings.BASE_DIR)
# Well inside BERTH_HOST_DOWN_AFTER, so the demo hosts never look dead.
HEARTBEAT_EVERY = 20
LEASE_STARTS_IN = 20


class Command(BaseCommand):
    help = "Set up a demo cloud and serve the API, admin, worker and beat on 127.0.0.1."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=8000)

    def handle(self, *args, port, **options):
        self.step("migrating the database")
        call_command("migrate", interactive=False, verbosity=0)
        password = self.ensure_admin_user()
        _, token = token_create(
            project_name=settings.BERTH_DEMO_PROJECT, username=DEMO_USER, role="admin"
        )
        self.step(f"making the demo cloud: network {demo.DEMO_NETWORK}, hosts, flavors")
        with progress_bar(self.stderr) as bar:
            task = bar.add_task("network and hosts", total=demo.SETUP_STEPS)
            network = demo.network_ensure(tick=lambda: bar.advance(task))
        self.beat = time.monotonic()

        base = f"http://127.0.0.1:{port}"
        # Stop the children on SIGTERM too, not only on Ctrl-C.
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        processes = self.start_processes(port)
        try:
            self.wait_for_api(base, processes)
            self.step("checking a worker round trip")
            call_command("healthcheck", "--timeout", "60", stdout=self.stdout)
            self.step("booting servers through the pipeline (compute-3 fails every spawn)")
            self.servers_wait("servers building", demo.servers_boot(network))
            self.step(
                f"a lease of the gpu host starting in {LEASE_STARTS_IN}s (heads-up 10s before)"
            )
            lease = self.lease_wait_active(demo.lease_ensure(starts_in=LEASE_STARTS_IN))
            self.servers_wait("leased server building", demo.lease_server_boot(lease, network))
            self.stdout.write("Press Ctrl-C to stop.")
            self.summary(base, token, password, network)
            while all(p.poll() is None for p in processes.values()):
                time.sleep(1)
                self.heartbeat()
            dead = [name for name, p in processes.items() if p.poll() is not None]
            raise CommandError(f"{', '.join(dead)} stopped; see the output above")
        except KeyboardInterrupt:
            self.stdout.write("stopping")
        finally:
            self.stop(processes)

    def step(self, text: str) -> None:
        self.stdout.write(self.style.MIGRATE_HEADING(f"==> {text}"))

    def heartbeat(self) -> None:
        """The demo hosts' heartbeat, as their agents would send it. The
        waits below send it too: booting and the lease's start can take
        longer than BERTH_HOST_DOWN_AFTER, and then the hosts look dead."""
        if time.monotonic() - self.beat > HEARTBEAT_EVERY:
            demo.hosts_report()
            self.beat = time.monotonic()

    def servers_wait(self, description: str, instances: list) -> None:
        with progress_bar(self.stderr) as bar:
            task = bar.add_task(description, total=len(instances))

            def tick(done: int) -> None:
                bar.update(task, completed=done)
                self.heartbeat()

            demo.servers_wait(instances, tick=tick)

    def lease_wait_active(self, lease):
        """Until the lease starts; the bar counts the seconds to its start."""

        def seconds_left() -> float:
            return max(0.0, (lease.start_at - timezone.now()).total_seconds())

        wait = seconds_left()
        with progress_bar(self.stderr) as bar:
            task = bar.add_task(f"lease {lease.name} starts in (s)", total=round(wait))

            def tick() -> None:
                bar.update(task, completed=round(wait - seconds_left()))
                self.heartbeat()

            return demo.lease_wait_active(lease, tick=tick)

    def ensure_admin_user(self) -> str:
        """An admin console login, with a fresh password each run."""
        password = secrets.token_urlsafe(12)
        user, _ = get_user_model().objects.get_or_create(username="admin")
        user.is_staff = user.is_superuser = True
        user.set_password(password)
        user.save()
        membership_ensure(project_name=settings.BERTH_DEMO_PROJECT, username="admin", role="admin")
        return password

    def start_processes(self, port: int) -> dict[str, subprocess.Popen]:
        self.step("starting API, workers and beat")
        python = sys.executable
        commands = {
            "api": [python, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
            **{
                name: [
                    python,
                    "-m",
                    "celery",
                    "-A",
                    "config",
                    "--quiet",  # no banner
                    "worker",
                    *options,
                    "-l",
                    "warning",
                    "--without-mingle",
                    "--without-gossip",
                ]
                for name, options in WORKER_POOLS.items()
            },
            "beat": [python, "-m", "celery", "-A", "config", "beat", "-l", "warning"],
        }
        return {name: subprocess.Popen(cmd, cwd=ROOT) for name, cmd in commands.items()}

    def wait_for_api(self, base: str, processes, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if processes["api"].poll() is not None:
                raise CommandError("the API process exited; see the output above")
            try:
                with urllib.request.urlopen(f"{base}/networking", timeout=2) as response:
                    json.load(response)
                return
            except OSError:
                time.sleep(0.3)
        raise CommandError(f"the API did not answer on {base} within {timeout:.0f}s")

    def stop(self, processes) -> None:
        for process in processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()

    def summary(self, base: str, token: str, password: str, network) -> None:
        """Tables of what the demo made, then how to reach it; the token is
        the last line, where scripts (and the tests) read it."""
        color = self.stdout.isatty()
        # Piped output gets a fixed width, not rich's 80 columns.
        width = shutil.get_terminal_size((120, 24)).columns
        tables = [
            demo.hosts_table(network),
            demo.network_table(network),
            demo.leases_table(),
            demo.servers_table(),
        ]
        self.stdout.write(demo.render(*tables, width=width, color=color))
        auth = settings.BERTH_AUTH_MODE
        clients = demo.cli_environment(base=base, token=token)
        lines = [
            "",
            "berth is running.",
            f"  admin console    {base}/admin/   (user admin, password {password})",
            f"  API docs         {base}/api/docs",
            f"  networking       {clients['OS_NETWORK_ENDPOINT_OVERRIDE']}",
            f"  compute          {clients['OS_COMPUTE_ENDPOINT_OVERRIDE']}",
            f"  reservation      {clients['OS_RESERVATION_ENDPOINT_OVERRIDE']}",
            f"  auth mode        {auth}",
            "",
            *demo.cli_hint(clients),
            "",
            f"token (admin of project {settings.BERTH_DEMO_PROJECT}):",
            token,
        ]
        self.stdout.write("\n".join(lines))
