"""Set up a demo cloud and run berth's processes on 127.0.0.1.

Runs on whatever the settings say: with nothing set, SQLite and the
filesystem broker (the embedded default), so a newcomer needs nothing
installed. API, worker and beat are separate processes, exactly as in
production.
"""

import json
import os
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

from config.celery import WORKER_POOLS
from config.progress import progress_bar
from console import demo
from identity.auth import DEMO_USER
from identity.services import membership_ensure, token_create, user_password_set

ROOT = Path(settings.BASE_DIR)
LEASE_STARTS_IN = 20
# Agents beat every 2 s and a host is down after 3 missed beats, so the
# demo shows a host going down (and a build failing over) within seconds.
HEARTBEAT_INTERVAL = 2
DOWN_AFTER_MISSED = 3


class Command(BaseCommand):
    help = "Set up a demo cloud and serve the API, admin, worker and beat on 127.0.0.1."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=8000)

    def handle(self, *args, port, **options):
        self.step("migrating the database")
        call_command("migrate", interactive=False, verbosity=0)
        password = self.ensure_admin_user()
        # The demo user signs in as Keystone users do (auth_url, user,
        # password, project), with a fresh password each run.
        user_password = secrets.token_urlsafe(12)
        user_password_set(
            project_name=settings.BERTH_DEMO_PROJECT,
            username=DEMO_USER,
            role="admin",
            password=user_password,
        )
        _, token = token_create(
            project_name=settings.BERTH_DEMO_PROJECT, username=DEMO_USER, role="admin"
        )
        self.step(f"making the demo cloud: network {demo.DEMO_NETWORK} on two racks, flavors")
        network = demo.network_ensure()
        # This process shows hosts up or down as the children judge them.
        settings.BERTH_HOST_DOWN_AFTER = HEARTBEAT_INTERVAL * DOWN_AFTER_MISSED

        base = f"http://127.0.0.1:{port}"
        # Stop the children on SIGTERM too, and on Ctrl-C also when started
        # in a script's background (which ignores SIGINT, and Python then
        # leaves it ignored).
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        processes = self.start_processes(port)
        try:
            self.wait_for_api(base, processes)
            self.step("checking a worker round trip")
            call_command("healthcheck", "--timeout", "60", stdout=self.stdout)
            self.hosts_wait()
            demo.reservable_ensure()
            self.step("booting servers through the pipeline (compute-3 fails every spawn)")
            self.servers_wait("servers building", demo.servers_boot(network))
            self.step(
                f"a lease of the gpu host starting in {LEASE_STARTS_IN}s (heads-up 10s before)"
            )
            lease = self.lease_wait_active(demo.lease_ensure(starts_in=LEASE_STARTS_IN))
            self.servers_wait("leased server building", demo.lease_server_boot(lease, network))
            self.failover(processes, network)
            self.stdout.write("Press Ctrl-C to stop.")
            self.summary(base, token, password, user_password, network)
            while all(p.poll() is None for p in processes.values()):
                time.sleep(1)
            dead = [name for name, p in processes.items() if p.poll() is not None]
            raise CommandError(f"{', '.join(dead)} stopped; see the output above")
        except KeyboardInterrupt:
            self.stdout.write("stopping")
        finally:
            self.stop(processes)

    def step(self, text: str) -> None:
        self.stdout.write(self.style.MIGRATE_HEADING(f"==> {text}"))

    def hosts_wait(self) -> None:
        driver = (
            "their servers are libvirt test-driver domains"
            if demo.libvirt_available()
            else "libvirt-python is not installed, so they use the fake driver"
        )
        self.step(f"waiting for the hosts' agents to report ({driver})")
        with progress_bar(self.stderr) as bar:
            task = bar.add_task("hosts reported", total=len(demo.DEMO_HOSTS))
            demo.hosts_wait(tick=lambda done: bar.update(task, completed=done))

    def failover(self, processes, network) -> None:
        """Stop one host's agent, boot a server that goes there, and show
        the host go down and the build fail over; then bring the agent
        back."""
        name = demo.DEMO_FAILOVER_HOST
        self.step(f"stopping the agent of {name}, then booting failover-1")
        agent = processes[f"agent {name}"]
        agent.kill()
        agent.wait()
        instances = demo.failover_boot(network)
        self.servers_wait("failover-1 building", instances, timeout=60)
        self.stdout.write(demo.failover_story(instances, name))
        self.step(f"restarting the agent of {name}")
        processes[f"agent {name}"] = self.start_agent(name)
        if demo.host_up_wait(name) and demo.libvirt_available():
            self.stdout.write(
                f"{name} is up again. libvirt's test driver keeps its domains in the agent's "
                "memory, so the agent came back with none: its servers show power state "
                "nostate (on a real hypervisor they would still run)."
            )

    def servers_wait(self, description: str, instances: list, timeout: float = 90) -> None:
        with progress_bar(self.stderr) as bar:
            task = bar.add_task(description, total=len(instances))
            demo.servers_wait(
                instances, timeout, tick=lambda done: bar.update(task, completed=done)
            )

    def lease_wait_active(self, lease):
        """Until the lease starts; the bar counts the seconds to its start."""

        def seconds_left() -> float:
            return max(0.0, (lease.start_at - timezone.now()).total_seconds())

        wait = seconds_left()
        with progress_bar(self.stderr) as bar:
            task = bar.add_task(f"lease {lease.name} starts in (s)", total=round(wait))

            def tick() -> None:
                bar.update(task, completed=round(wait - seconds_left()))

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

    def environment(self) -> dict[str, str]:
        return {
            **os.environ,
            "BERTH_HEARTBEAT_INTERVAL": str(HEARTBEAT_INTERVAL),
            "BERTH_HOST_DOWN_AFTER_MISSED": str(DOWN_AFTER_MISSED),
        }

    def start_agent(self, name: str) -> subprocess.Popen:
        """`manage.py agent` for one demo host, as on that host."""
        report = self.report_files[name]
        command = [sys.executable, "manage.py", "agent", "--report-file", str(report)]
        return subprocess.Popen(
            [*command, "--loglevel", "warning", "--quiet"], cwd=ROOT, env=self.environment()
        )

    def start_processes(self, port: int) -> dict[str, subprocess.Popen]:
        self.step("starting API, workers, beat and one agent per host")
        self.report_files = demo.agent_report_files(Path(settings.DATA_DIR) / "agents")
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
        env = self.environment()
        processes = {
            name: subprocess.Popen(cmd, cwd=ROOT, env=env) for name, cmd in commands.items()
        }
        for name in demo.DEMO_HOSTS:
            processes[f"agent {name}"] = self.start_agent(name)
        return processes

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

    def summary(self, base: str, token: str, password: str, user_password: str, network) -> None:
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
        keystone = demo.keystone_environment(base=base, username=DEMO_USER, password=user_password)
        clouds = Path(settings.DATA_DIR) / "clouds.yaml"
        clouds.write_text(demo.clouds_yaml(keystone), encoding="utf-8")
        lines = [
            "",
            "berth is running.",
            f"  admin console    {base}/admin/   (user admin, password {password})",
            f"  API docs         {base}/api/docs",
            f"  identity         {keystone['OS_AUTH_URL']}   (its catalog lists the others)",
            f"  networking       {base}/{settings.BERTH_NETWORKING_PREFIX}",
            f"  compute          {base}/{settings.BERTH_COMPUTE_PREFIX}/v2.1",
            f"  reservation      {base}/{settings.BERTH_RESERVATION_PREFIX}/v1",
            f"  auth mode        {auth}",
            "",
            "openstack CLI, openstacksdk, blazarclient, Ansible, Terraform: sign in as a",
            f"Keystone user (also cloud 'berth' in {clouds}):",
            *(f"  export {k}={v}" for k, v in keystone.items()),
            "",
            "Or with the token below:",
            *demo.cli_hint(clients),
            "",
            f"token (admin of project {settings.BERTH_DEMO_PROJECT}):",
            token,
        ]
        self.stdout.write("\n".join(lines))
