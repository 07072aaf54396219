"""The host side of berth: the work a host does, and the agent that does it.

One agent runs on each host (``manage.py agent``), as nova-compute does: a
Celery worker that consumes only its host's queue, ``host.<name>``, drives
the hypervisor through the host's virt driver, and reports the host by
itself: its capabilities when it starts and whenever they change, a
heartbeat every BERTH_HEARTBEAT_INTERVAL seconds, and its domains' power
states as they change. It talks to the control plane only through the
broker (docs/architecture.md says why): every message it takes carries what
the work needs, and every result goes back as a message to a control-plane
task. It needs no database credentials and opens no database connection.

A host without an agent (reported by ``manage.py host_report``) has its
queue served by a central worker started with ``--host-queues``
(compute.worker), which runs the same tasks and, having the database,
records their results itself instead of sending them (_record).
"""

import logging
import threading
from collections import defaultdict
from collections.abc import Callable

from celery import bootsteps, current_app, shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.utils import timezone

from compute.virt import DriverError, PowerAction, SpawnRequest, driver_for

logger = logging.getLogger(__name__)

# One piece of work per instance at a time on this host: a spawn resumed by
# the reaper while the first run is still under way waits for it, then
# finds the domain and reports it instead of defining a second one.
_instance_locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)


def _send(task: str, *args) -> None:
    # By name: the agent imports none of the control plane's tasks.
    # CELERY_TASK_ROUTES names the queue (results on build, reports on agents).
    current_app.send_task(task, args)


def _record(task: str, *args) -> None:
    """Hand the result of the host's work to the control plane's ``task``.
    An agent sends it as a message. A control-plane worker that serves the
    queue of a host without an agent (compute.worker) has the database, so
    it runs ``task`` here, in the same task: the build's result costs no
    third message. If that fails (a lost connection, a bug), the result is
    sent all the same, and the task that takes it retries or records the
    failure as for an agent's: a result recorded twice changes nothing the
    second time."""
    if settings.BERTH_ROLE != "agent":
        try:
            current_app.tasks[task](*args)
            return
        except Exception:
            logger.warning("%s not run in place; sent to the control plane", task, exc_info=True)
    _send(task, *args)


def _now() -> str:
    return timezone.now().isoformat()


def _outcome(work: Callable[[], dict]) -> dict:
    """What ``work`` returned, or its failure as the control plane records
    it: the driver's error; or an error no driver expects (a bug, a
    malformed host option), said as such, which fails a build at once
    instead of at its deadline. A spawn stopped at its time limit is left
    to the reaper, which sends it again."""
    try:
        return work()
    except DriverError as error:
        return {"error": str(error)}
    except SoftTimeLimitExceeded:
        raise
    except Exception as error:  # reported, or the control plane would wait for it
        logger.exception("unexpected error in the host's work")
        return {"error": f"unexpected {type(error).__name__}: {error}", "unexpected": True}


def spawn_result(request: dict, virt_driver: str) -> dict:
    """Start the domain ``request`` (a SpawnRequest message) describes; what
    compute.spawn_done records: the domain's data and power state, or the
    driver's error, and when it ran. Safe to run twice: the driver finds a
    domain it already made."""
    spawn_request = SpawnRequest.from_message(request)
    started = _now()

    def work() -> dict:
        spawned = driver_for(virt_driver, spawn_request.driver_options).spawn(spawn_request)
        return {"driver_data": spawned.driver_data, "power_state": spawned.power_state}

    with _instance_locks[spawn_request.instance_id]:
        result = _outcome(work)
    return result | {"started": started, "finished": _now()}


# A hung hypervisor call is stopped before the reaper sends the spawn
# again (in a prefork worker; a thread pool, as the agent's, cannot stop one).
@shared_task(
    name="compute.spawn",
    soft_time_limit=settings.BERTH_SPAWN_DEADLINE - 1,
    time_limit=settings.BERTH_SPAWN_DEADLINE,
)
def spawn(request: dict, attempt: int, virt_driver: str) -> None:
    result = spawn_result(request, virt_driver)
    _record("compute.spawn_done", request["instance_id"], attempt, request["host"], result)


def power_result(instance_id: str, action: str, virt_driver: str, driver_options: dict) -> dict:
    """Start, stop or reboot the instance's domain; what compute.power_done
    records: the power state after, or the driver's error, and when it ran."""
    started = _now()

    def work() -> dict:
        driver = driver_for(virt_driver, driver_options)
        return {"power_state": driver.power(instance_id, PowerAction(action))}

    with _instance_locks[instance_id]:
        result = _outcome(work)
    return result | {"started": started}


@shared_task(name="compute.power")
def power(instance_id: str, action: str, virt_driver: str, driver_options: dict) -> None:
    result = power_result(instance_id, action, virt_driver, driver_options)
    _record("compute.power_done", instance_id, action, result)


@shared_task(name="compute.destroy")
def destroy(instance_id: str, virt_driver: str, driver_options: dict) -> None:
    """Remove the instance's domain and disk, if there are any."""
    with _instance_locks[instance_id]:
        driver_for(virt_driver, driver_options).destroy(instance_id)


# --- the agent's own reports ----------------------------------------------------


class Reporter:
    """What the agent tells the control plane about its host, and when: the
    whole report (compute.services.HostReport as a message) when it starts
    and whenever it changes, else a heartbeat; either carries the power
    state of every domain the host runs whenever one changed. ``load``
    gives the report; it is asked again at every beat, so an edit of the
    agent's report file reaches the control plane within one interval."""

    def __init__(self, load: Callable[[], dict]):
        self.load = load
        self.report = load()
        self.sent_report: dict | None = None
        self.sent_states: dict[str, int] | None = None

    @property
    def host(self) -> str:
        return self.report["name"]

    def beat(self) -> None:
        try:
            self.report = self.load()
            driver = driver_for(self.report["virt_driver"], self.report["driver_options"])
            states = driver.power_states()
        except (OSError, ValueError, DriverError):
            # A broken report file or hypervisor connection: log it and keep
            # the heartbeat going, so a typo does not fail the host over.
            logger.exception("agent %s: cannot read its report or its domains", self.host)
            states = self.sent_states
        changed = states if states != self.sent_states else None
        if self.report != self.sent_report:
            _send("compute.agent_report", self.report, states or {}, _now())
            self.sent_report = self.report
        else:
            _send("compute.heartbeat", self.host, changed, _now())
        self.sent_states = states


class Agent(bootsteps.StartStopStep):
    """A consumer step of the agent's worker: report now, then every
    heartbeat interval, on the worker's own timer (no thread of its own)."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent, berth_agent: Reporter | None = None, **kwargs):
        self.reporter = berth_agent
        self.enabled = berth_agent is not None
        self.timer = None
        super().__init__(parent, **kwargs)

    def start(self, consumer):
        self.reporter.beat()
        self.timer = consumer.timer.call_repeatedly(
            settings.BERTH_HEARTBEAT_INTERVAL, self.reporter.beat, priority=10
        )

    def stop(self, consumer):
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
