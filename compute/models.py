"""Nova's model, trimmed: hosts that report themselves, flavors, instances
and the NICs they asked for, and the action log of every build."""

import uuid
from datetime import datetime

from django.db import models
from django.db.models import F, Q
from django.db.models.deletion import ProtectedError
from django.utils import timezone
from django_fsm import FSMField, transition


class Host(models.Model):
    """A hypervisor (or a baremetal node). Capacity counters are claimed and
    released with conditional updates; the check constraints make an
    over-commit impossible whatever the code does."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=255, unique=True)
    hypervisor_type = models.CharField(max_length=32, default="QEMU")
    # Which virt driver runs this host's instances (compute.virt.DRIVER_NAMES).
    virt_driver = models.CharField(max_length=32, default="fake")
    # A baremetal node: one instance takes it whole.
    baremetal = models.BooleanField(default=False)
    vcpus = models.PositiveIntegerField()
    memory_mb = models.PositiveIntegerField()
    disk_gb = models.PositiveIntegerField()
    cpu_allocation_ratio = models.FloatField(default=4.0)
    ram_allocation_ratio = models.FloatField(default=1.0)
    disk_allocation_ratio = models.FloatField(default=1.0)
    vcpus_used = models.PositiveIntegerField(default=0)
    memory_mb_used = models.PositiveIntegerField(default=0)
    disk_gb_used = models.PositiveIntegerField(default=0)
    running_instances = models.PositiveIntegerField(default=0)
    # What is left under the allocation ratios, kept by the database. Plain
    # columns (not expressions in each query) give the planner statistics,
    # so it walks hosts in weight order and stops at the top candidates.
    free_vcpus = models.GeneratedField(
        expression=F("vcpus") * F("cpu_allocation_ratio") - F("vcpus_used"),
        output_field=models.FloatField(),
        db_persist=True,
    )
    free_ram = models.GeneratedField(
        expression=F("memory_mb") * F("ram_allocation_ratio") - F("memory_mb_used"),
        output_field=models.FloatField(),
        db_persist=True,
    )
    free_disk = models.GeneratedField(
        expression=F("disk_gb") * F("disk_allocation_ratio") - F("disk_gb_used"),
        output_field=models.FloatField(),
        db_persist=True,
    )
    # The host's compute service version; below PORTS_BEFORE_SCHEDULING
    # (compute.pipeline) it does not understand ports created up front.
    service_version = models.PositiveIntegerField(default=2)
    enabled = models.BooleanField(default=True)
    disabled_reason = models.CharField(max_length=255, blank=True)
    last_heartbeat = models.DateTimeField(db_index=True)
    # Set by the liveness sweep when the heartbeats stopped, cleared when
    # they come back: the edge that fails builds over and notifies, once.
    down_since = models.DateTimeField(null=True, blank=True, editable=False)
    # An agent on the host serves its queue and reports it (compute.agent);
    # the central workers then leave that queue alone, even while the host
    # is down, so a dead agent's builds fail over instead of running here.
    has_agent = models.BooleanField(default=False, editable=False)
    # The domains the agent last said its hypervisor runs (instance uuid ->
    # power state), and when it said so: a report older than this one is
    # not applied over it.
    domains = models.JSONField(default=dict, blank=True, editable=False)
    domains_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Free-form traits used by reservation filters, e.g. {"node_type": "gpu"}.
    capabilities = models.JSONField(default=dict, blank=True)
    # Fake driver knobs: {"spawn_delay": 0.5, "spawn_error": "disk full"}.
    driver_options = models.JSONField(default=dict, blank=True)
    # Builds this host failed (a bind its drivers refused, a spawn its
    # hypervisor failed) since its last success, and when the last one did:
    # the scheduler weighs it down while that is recent (Nova's
    # BuildFailureWeigher). Kept by the pipeline, never by a form.
    failed_builds = models.PositiveIntegerField(default=0, editable=False)
    last_build_failure = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        indexes = [
            # The scheduler's weigher: most free RAM first, then name.
            models.Index(F("free_ram").desc(), F("name"), name="host_by_free_ram"),
        ]
        constraints = [
            models.CheckConstraint(
                name="host_vcpus_within_ratio",
                condition=Q(vcpus_used__lte=F("vcpus") * F("cpu_allocation_ratio")),
            ),
            models.CheckConstraint(
                name="host_ram_within_ratio",
                condition=Q(memory_mb_used__lte=F("memory_mb") * F("ram_allocation_ratio")),
            ),
            models.CheckConstraint(
                name="host_disk_within_ratio",
                condition=Q(disk_gb_used__lte=F("disk_gb") * F("disk_allocation_ratio")),
            ),
            models.CheckConstraint(
                name="host_baremetal_takes_one_instance",
                condition=Q(baremetal=False) | Q(running_instances__lte=1),
            ),
            models.CheckConstraint(
                name="host_ratios_positive",
                condition=Q(cpu_allocation_ratio__gt=0)
                & Q(ram_allocation_ratio__gt=0)
                & Q(disk_allocation_ratio__gt=0),
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Flavor(models.Model):
    # Nova flavor ids are free-form strings ("m1.small", "baremetal", a UUID).
    id = models.CharField(primary_key=True, max_length=255)
    name = models.CharField(max_length=255, unique=True)
    vcpus = models.PositiveIntegerField()
    ram = models.PositiveIntegerField(help_text="MiB")
    disk = models.PositiveIntegerField(help_text="GB")
    ephemeral = models.PositiveIntegerField(default=0)
    swap = models.PositiveIntegerField(default=0)
    rxtx_factor = models.FloatField(default=1.0)
    is_public = models.BooleanField(default=True)
    disabled = models.BooleanField(default=False)
    # A baremetal flavor takes a whole baremetal host.
    baremetal = models.BooleanField(default=False)
    extra_specs = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(name="flavor_vcpus_positive", condition=Q(vcpus__gte=1)),
            models.CheckConstraint(name="flavor_ram_positive", condition=Q(ram__gte=1)),
        ]

    def __str__(self) -> str:
        return self.name


class Image(models.Model):
    """A Glance image, as far as berth needs one: what a server boots from
    (Nova's imageRef), so that clients that ask for an image find it. berth
    keeps the record, not the bits."""

    class Visibility(models.TextChoices):
        PUBLIC = "public"
        PRIVATE = "private"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=255, db_index=True)
    disk_format = models.CharField(max_length=16, default="qcow2")
    container_format = models.CharField(max_length=16, default="bare")
    min_disk = models.PositiveIntegerField(default=0, help_text="GB")
    min_ram = models.PositiveIntegerField(default=0, help_text="MiB")
    visibility = models.CharField(
        max_length=16, choices=Visibility.choices, default=Visibility.PUBLIC
    )
    # Who may boot a private image; public images are everyone's.
    project = models.ForeignKey(
        "identity.Project", on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.name


class InstanceStatus(models.TextChoices):
    BUILD = "BUILD"
    ACTIVE = "ACTIVE"
    SHUTOFF = "SHUTOFF"
    ERROR = "ERROR"
    DELETED = "DELETED"


class TaskState(models.TextChoices):
    """The pipeline step an instance is in; null when none runs."""

    PREPARING_PORTS = "preparing_ports"
    SCHEDULING = "scheduling"
    BINDING = "binding"
    SPAWNING = "spawning"
    DELETING = "deleting"
    # The power actions, run by the instance's host (Nova's names).
    POWERING_OFF = "powering-off"
    POWERING_ON = "powering-on"
    REBOOTING = "rebooting"
    REBOOTING_HARD = "rebooting_hard"


class Instance(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    project = models.ForeignKey(
        "identity.Project", on_delete=models.PROTECT, related_name="instances"
    )
    # identity.auth.user_id_of: the user name, as long as Django allows one.
    user_id = models.CharField(max_length=150, blank=True)
    name = models.CharField(max_length=255, db_index=True)
    # The flavor may be deleted later; what the instance holds is copied.
    flavor = models.ForeignKey(
        Flavor, on_delete=models.SET_NULL, null=True, related_name="instances"
    )
    vcpus = models.PositiveIntegerField()
    memory_mb = models.PositiveIntegerField()
    disk_gb = models.PositiveIntegerField()
    baremetal = models.BooleanField(default=False)
    image_ref = models.CharField(max_length=255, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    # The workflow state (Nova's vm_state), changed only by the transitions
    # below; which pipeline step runs is task_state, and whether the guest
    # runs is power_state.
    status = FSMField(
        max_length=16, choices=InstanceStatus.choices, default=InstanceStatus.BUILD, db_index=True
    )
    task_state = models.CharField(max_length=32, choices=TaskState.choices, null=True, blank=True)
    # What the hypervisor last said of the guest (Nova's power_state codes,
    # compute.virt.PowerState), reported by the host.
    power_state = models.PositiveSmallIntegerField(default=0)
    # Where the instance runs or is being built; also the host whose
    # capacity it holds (claimed_host) until released.
    host = models.ForeignKey(
        Host, on_delete=models.PROTECT, null=True, blank=True, related_name="instances"
    )
    claimed_host = models.ForeignKey(
        Host, on_delete=models.PROTECT, null=True, blank=True, related_name="claims"
    )
    # Build attempt, bumped at every reschedule; tasks carry it so a stale
    # delivery from an earlier attempt does nothing.
    attempt = models.PositiveIntegerField(default=1)
    # Hosts tried and failed, and the alternates the scheduler proposed.
    excluded_hosts = models.JSONField(default=list, blank=True)
    alternate_hosts = models.JSONField(default=list, blank=True)
    # {"code", "message", "details", "created"} once the build failed.
    fault = models.JSONField(null=True, blank=True)
    # Why the last attempt failed, while later attempts still run.
    last_failure = models.TextField(blank=True)
    # Times the reaper resumed a stuck step; past a limit the build fails.
    resumes = models.PositiveIntegerField(default=0)
    # A lease's reservation this instance belongs to (scheduler hint).
    reservation_id = models.CharField(max_length=64, blank=True, db_index=True)
    # What the virt driver made (libvirt: the domain's XML), for admins.
    driver_data = models.TextField(blank=True)
    # The request (create, delete) whose steps are running or ran last.
    current_action = models.ForeignKey(
        "InstanceAction", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # When the current step must be done by; the reaper resumes it after.
    step_deadline = models.DateTimeField(null=True, blank=True, db_index=True)
    launched_at = models.DateTimeField(null=True, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [
            # New builds waiting for their first step, oldest first: what
            # a conductor takes along (compute.pipeline._builds).
            models.Index(
                fields=["created_at"],
                condition=Q(task_state=TaskState.PREPARING_PORTS),
                name="instance_waiting_to_prepare",
            ),
        ]
        constraints = [
            models.CheckConstraint(
                name="instance_claim_is_its_host",
                condition=Q(claimed_host__isnull=True) | Q(claimed_host=F("host")),
            ),
        ]

    def __str__(self) -> str:
        return self.name

    # --- transitions: each sets what goes with its state, the caller saves.

    def enter(self, state: str | None, deadline: datetime | None) -> None:
        """Move to pipeline step ``state`` (None: no step runs), due by
        ``deadline``."""
        self.task_state = state
        self.step_deadline = deadline

    def exclude_host(self, reason: str) -> None:
        """The host failed the attempt for ``reason``: no later attempt
        goes there."""
        self.excluded_hosts = [*self.excluded_hosts, self.host.name]
        self.last_failure = reason

    def next_attempt(self) -> None:
        """A new attempt, to be scheduled: the ports stay, the host goes."""
        self.attempt += 1
        self.host = None

    @transition(field=status, source=InstanceStatus.BUILD, target=InstanceStatus.ACTIVE)
    def set_active(self, driver_data: str, power_state: int) -> None:
        self.driver_data = driver_data
        self.power_state = power_state
        self.launched_at = timezone.now()
        self.last_failure = ""
        self.enter(None, None)

    @transition(field=status, source=InstanceStatus.BUILD, target=InstanceStatus.ERROR)
    def set_error(self, fault: dict) -> None:
        self.fault = fault
        self.enter(None, None)

    @transition(
        field=status,
        source=[InstanceStatus.ACTIVE, InstanceStatus.ERROR],
        target=InstanceStatus.SHUTOFF,
    )
    def powered_off(self, power_state: int) -> None:
        self.power_state = power_state

    @transition(
        field=status,
        source=[InstanceStatus.ACTIVE, InstanceStatus.SHUTOFF, InstanceStatus.ERROR],
        target=InstanceStatus.ACTIVE,
    )
    def powered_on(self, power_state: int) -> None:
        self.power_state = power_state

    @transition(field=status, source="*", target=InstanceStatus.DELETED)
    def set_deleted(self) -> None:
        self.deleted_at = timezone.now()
        self.enter(None, None)

    @transition(field=status, source=InstanceStatus.ERROR, target=InstanceStatus.BUILD)
    def retry(self, first: str, deadline: datetime) -> None:
        """Build again from ``first``, on any host, as a new attempt."""
        self.fault = None
        self.last_failure = ""
        self.excluded_hosts = []
        self.attempt += 1
        self.resumes = 0
        self.host = None
        self.enter(first, deadline)


def _cascade(collector, field, sub_objs) -> None:
    # CASCADE without its SET NULL first, which the NIC's check constraint
    # refuses; the NICs go before the row they name (nullable=False).
    collector.collect(
        sub_objs,
        source=field.remote_field.model,
        source_attr=field.name,
        nullable=False,
        fail_on_restricted=False,
    )


def nic_network_deleted(collector, field, sub_objs, using) -> None:
    """on_delete of a NIC's network. A live instance (any status but
    DELETED: an ERROR build may be retried) keeps the network: deleting it
    is refused, as Neutron answers NetworkInUse while ports are on it. The
    NICs of deleted instances go with the network: a request that names
    neither a network nor a port says nothing, and a deleted instance's
    story is its action log."""
    # select_related(None): the admin's collector hands over a queryset that
    # joins the network, which only() could not then leave out.
    live = sub_objs.select_related(None).exclude(instance__status=InstanceStatus.DELETED)
    live = list(live.only("instance", "index"))
    if live:
        raise ProtectedError("A live instance asked for the network.", live)
    _cascade(collector, field, sub_objs)


def nic_port_deleted(collector, field, sub_objs, using) -> None:
    """on_delete of a NIC's port. A port the user gave a live instance takes
    its NIC along: the interface is detached, as Nova does when Neutron
    deletes a server's port, and a build still to run goes on without it
    instead of looking for a port that is gone. Any other NIC only forgets
    the port: compute deletes its own ports itself (a failed attempt, a
    baremetal swap) and makes them again on the NIC's network when a build
    needs them; a deleted instance's NIC keeps what it asked for."""
    detached = sub_objs.filter(created_by_compute=False).exclude(
        instance__status=InstanceStatus.DELETED
    )
    _cascade(collector, field, detached)
    rest = sub_objs.filter(Q(created_by_compute=True) | Q(instance__status=InstanceStatus.DELETED))
    collector.add_field_update(field, None, rest)


class InstanceNic(models.Model):
    """One NIC the user asked for: on a network (compute creates the port)
    or on a port the user passed in (only unbound on delete)."""

    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="nics")
    index = models.PositiveSmallIntegerField()
    network = models.ForeignKey(
        "networking.Network", on_delete=nic_network_deleted, null=True, blank=True
    )
    requested_port_id = models.UUIDField(null=True, blank=True)
    fixed_ip = models.GenericIPAddressField(null=True, blank=True)
    port = models.ForeignKey(
        "networking.Port", on_delete=nic_port_deleted, null=True, blank=True, related_name="+"
    )
    created_by_compute = models.BooleanField(default=False)

    class Meta:
        ordering = ["index"]
        constraints = [
            models.UniqueConstraint(fields=["instance", "index"], name="nic_index_once"),
            models.CheckConstraint(
                name="nic_network_or_port",
                condition=Q(network__isnull=False) | Q(requested_port_id__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        # Also how a network's delete names what still uses it.
        return f"server {self.instance_id} NIC {self.index}"


class InstanceAction(models.Model):
    """os-instance-actions: one per user request (create, delete)."""

    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="actions")
    action = models.CharField(max_length=32)
    request_id = models.CharField(max_length=64)
    # identity.auth.user_id_of: the user name, as long as Django allows one.
    user_id = models.CharField(max_length=150, blank=True)
    project_id = models.UUIDField()
    message = models.TextField(blank=True)
    start_time = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["start_time", "id"]

    def __str__(self) -> str:
        return f"{self.action} {self.instance_id}"


class InstanceActionEvent(models.Model):
    """One pipeline step of one attempt: what ran where, how long, outcome."""

    action = models.ForeignKey(InstanceAction, on_delete=models.CASCADE, related_name="events")
    event = models.CharField(max_length=64)
    attempt = models.PositiveIntegerField(default=1)
    host = models.CharField(max_length=255, blank=True)
    start_time = models.DateTimeField()
    finish_time = models.DateTimeField(null=True, blank=True)
    result = models.CharField(max_length=16, blank=True)
    details = models.TextField(blank=True)

    class Meta:
        ordering = ["start_time", "id"]
        constraints = [
            # A redelivered step updates its event instead of adding one.
            models.UniqueConstraint(
                fields=["action", "event", "attempt"], name="event_once_per_attempt"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event}#{self.attempt}"
