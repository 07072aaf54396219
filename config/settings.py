"""berth settings: everything comes from the environment.

With nothing set, berth runs on the embedded default: SQLite in ``var/`` and
kombu's filesystem transport as the broker, with real worker and beat
processes. Set ``DATABASE_URL`` and ``CELERY_BROKER_URL`` for PostgreSQL and
Redis. Only settings differ between the two; the code path is the same.
"""

from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured
from kombu import Queue

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env")

# Local state of the embedded default (SQLite file, broker folders).
DATA_DIR = Path(env.str("BERTH_DATA_DIR", default=str(BASE_DIR / "var")))

DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]", "testserver"])

INSTALLED_APPS = [
    # First: its admin/index.html (the dashboard) overrides the admin's own.
    "console",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "config",
    "identity",
    "networking",
    "compute",
    "reservations",
]

MIDDLEWARE = [
    "config.request_id.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

# OpenStack clients never add a trailing slash, and a POST cannot be
# redirected, so routes are slash-less and nothing appends one.
APPEND_SLASH = False

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "config" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- database -------------------------------------------------------------

SQLITE_PATH = DATA_DIR / "berth.sqlite3"
DATABASES = {"default": env.db_url("DATABASE_URL", default=f"sqlite:///{SQLITE_PATH}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES["default"]["OPTIONS"] = {
        # API, worker and beat are separate processes writing one file: WAL
        # lets readers run beside the writer, IMMEDIATE takes the write lock
        # at BEGIN so two writers queue (timeout) instead of deadlocking.
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }
    # Tests start real worker processes, which cannot see an in-memory DB.
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test.sqlite3")}
    DATABASES["default"]["CONN_MAX_AGE"] = 0
else:
    # A fresh PostgreSQL connection costs about 10 ms; reusing them took a
    # 10-row list from 117 to 944 req/s. Health checks drop broken ones.
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("BERTH_CONN_MAX_AGE", default=600)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    # Server-side parameters let psycopg prepare a statement run more than
    # BERTH_DB_PREPARE_THRESHOLD times on a connection: PostgreSQL then
    # skips parsing and planning it. A build repeats the same few dozen
    # statements, so this cut its in-process time by about 15%. Set the
    # threshold to -1 behind a transaction-pooling PgBouncer (no prepared
    # statements survive there).
    prepare_threshold = env.int("BERTH_DB_PREPARE_THRESHOLD", default=5)
    if prepare_threshold >= 0:
        DATABASES["default"].setdefault("OPTIONS", {}).update(
            server_side_binding=True, prepare_threshold=prepare_threshold
        )
DATABASES["default"]["ATOMIC_REQUESTS"] = False
# A host's agent (manage.py agent) holds no database credentials: it talks
# to the control plane through the broker alone, and any query it made by
# mistake fails loudly here instead of opening a local SQLite file.
BERTH_ROLE = env.str("BERTH_ROLE", default="control")
if BERTH_ROLE == "agent":
    DATABASES = {"default": {"ENGINE": "django.db.backends.dummy"}}

# Signs admin sessions, CSRF tokens and password resets. The embedded
# default (SQLite) is a laptop's and may use a key everyone knows; with a
# database server berth is a deployment, where that key would let anyone
# forge an admin session, so it refuses to start without one of its own.
SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1] not in ("sqlite3", "dummy"):
        raise ImproperlyConfigured(
            "SECRET_KEY is not set, and DATABASE_URL names a database server "
            f"({DATABASES['default']['ENGINE'].rsplit('.', 1)[-1]}): berth would sign "
            "admin sessions and CSRF tokens with the embedded default's public key. "
            "Set SECRET_KEY to a long random value, the same in every API and worker "
            "process, e.g. python -c 'import secrets; print(secrets.token_urlsafe(50))'."
        )
    SECRET_KEY = "berth-insecure-embedded-default-key"

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
# Serve admin and schema UI assets without a collectstatic step or a CDN.
WHITENOISE_USE_FINDERS = True

# --- API --------------------------------------------------------------------

# Where each OpenStack-compatible API is mounted (no leading/trailing slash).
BERTH_NETWORKING_PREFIX = env.str("BERTH_NETWORKING_PREFIX", default="networking")
BERTH_COMPUTE_PREFIX = env.str("BERTH_COMPUTE_PREFIX", default="compute")
BERTH_RESERVATION_PREFIX = env.str("BERTH_RESERVATION_PREFIX", default="reservation")

# "token": X-Auth-Token must name a token made by `manage.py create_token`.
# "noauth": any token (or none) acts as an admin of BERTH_DEMO_PROJECT; this
# is what keystoneauth's `none` plugin needs (it sends `notused`).
BERTH_AUTH_MODE = env.str("BERTH_AUTH_MODE", default="token")
BERTH_DEMO_PROJECT = env.str("BERTH_DEMO_PROJECT", default="demo")
# Where clients reach berth, as the identity API's service catalog names it
# (behind a proxy, the proxy's URL); empty: the URL each request came to.
BERTH_PUBLIC_URL = env.str("BERTH_PUBLIC_URL", default="").rstrip("/")
# Seconds a token issued by the identity API lasts (Keystone's default).
BERTH_TOKEN_LIFETIME = env.int("BERTH_TOKEN_LIFETIME", default=3600)
# Failed password sign-ins in a row after which a user name is locked out
# for BERTH_LOCKOUT_SECONDS (Keystone's lockout_failure_attempts and
# lockout_duration); 0: never. Only that user waits, not the API.
BERTH_LOCKOUT_FAILURES = env.int("BERTH_LOCKOUT_FAILURES", default=5)
BERTH_LOCKOUT_SECONDS = env.int("BERTH_LOCKOUT_SECONDS", default=300)
# The project whose notifications tell the operator about the cloud itself
# (a host down or back up); subscribe to them there (Keystone's "admin").
BERTH_OPERATOR_PROJECT = env.str("BERTH_OPERATOR_PROJECT", default="admin")

# Default per-project limits; -1 means unlimited. Overridden per project in
# the admin (Quota rows).
BERTH_QUOTA_DEFAULTS = {
    "network": env.int("BERTH_QUOTA_NETWORK", default=100),
    "subnet": env.int("BERTH_QUOTA_SUBNET", default=100),
    "port": env.int("BERTH_QUOTA_PORT", default=500),
    "instances": env.int("BERTH_QUOTA_INSTANCES", default=50),
    "cores": env.int("BERTH_QUOTA_CORES", default=200),
    "ram": env.int("BERTH_QUOTA_RAM", default=512 * 1024),
    "leases": env.int("BERTH_QUOTA_LEASES", default=50),
    # Webhook subscriptions: each event is delivered to every one.
    "subscriptions": env.int("BERTH_QUOTA_SUBSCRIPTIONS", default=20),
}

# --- networking -------------------------------------------------------------

# Generated MACs start with this prefix (Neutron's default base_mac).
BERTH_MAC_BASE = env.str("BERTH_MAC_BASE", default="fa:16:3e")
# VLAN ids handed out when a vlan segment is created without one:
# "physnet1:100:199,physnet2:200:299".
BERTH_VLAN_RANGES = env.list("BERTH_VLAN_RANGES", default=[])
# VXLAN VNIs for networks created without provider attributes.
BERTH_VNI_RANGE = env.str("BERTH_VNI_RANGE", default="1000:1999999")
# Addresses one port may hold (Neutron's max_fixed_ips_per_port): with the
# port quota it bounds how many addresses a project can take.
BERTH_MAX_FIXED_IPS_PER_PORT = env.int("BERTH_MAX_FIXED_IPS_PER_PORT", default=5)
# Seconds between a host agent's heartbeats (Nova's report_interval).
BERTH_HEARTBEAT_INTERVAL = env.float("BERTH_HEARTBEAT_INTERVAL", default=10.0)
# A host whose heartbeats stopped for this many intervals is down: not
# scheduled, its waiting builds failed over, its leases healed, its network
# agent shown dead (Nova's service_down_time, Neutron's agent_down_time).
BERTH_HOST_DOWN_AFTER_MISSED = env.int("BERTH_HOST_DOWN_AFTER_MISSED", default=6)
BERTH_HOST_DOWN_AFTER = env.float(
    "BERTH_HOST_DOWN_AFTER", default=BERTH_HEARTBEAT_INTERVAL * BERTH_HOST_DOWN_AFTER_MISSED
)

# --- compute ----------------------------------------------------------------

# Hosts a build may try (the first plus reschedules) before it is ERROR.
BERTH_BUILD_MAX_ATTEMPTS = env.int("BERTH_BUILD_MAX_ATTEMPTS", default=3)
# Seconds a pipeline step that only writes the database may take from when
# it is enqueued; past it the reaper resumes the step (its message went with
# a worker or the broker). Resuming such a step early is safe: it is one
# transaction under the instance's lock, so a second run waits for the
# first, then finds nothing left to do.
BERTH_STEP_DEADLINE = env.int("BERTH_STEP_DEADLINE", default=15)
# Seconds a spawn may take from when bind hands it to its host. Past it the
# reaper sends it again (a host's spawn is idempotent: it finds the domain
# it made and reports it), or fails it over if the host is down. Raise it
# for hypervisors that take longer.
BERTH_SPAWN_DEADLINE = env.int("BERTH_SPAWN_DEADLINE", default=30)
# While messages wait in a step's queue (the build queue, or its host's) the
# step may be overdue only because it waits behind them: the reaper then
# resumes it only once it is overdue by this many seconds more.
BERTH_STEP_BACKLOG_GRACE = env.int("BERTH_STEP_BACKLOG_GRACE", default=600)
# Seconds a conductor's message for new builds, once sent, is trusted to be
# on its way: meanwhile, new builds are left to it (it takes along those
# waiting when it starts) and send no message of their own. Past it (a
# backlog holds the message, or it was lost), the next request sends one.
BERTH_TAKE_ALONG_WINDOW = env.int("BERTH_TAKE_ALONG_WINDOW", default=1)
# How often a worker serving the host queues (compute.worker) looks for
# hosts reported since: a build for a new host waits at most this long.
BERTH_HOST_QUEUE_SYNC = env.float("BERTH_HOST_QUEUE_SYNC", default=5.0)
# The libvirt daemon a libvirt host's driver talks to, unless the host's
# driver_options name one (libvirt_uri): the host's own system instance.
BERTH_LIBVIRT_URI = env.str("BERTH_LIBVIRT_URI", default="qemu:///system")
# The storage pool instance disks are made in, unless the host's driver_options
# name one (libvirt_pool): a packaged libvirt's pool is called "default".
BERTH_LIBVIRT_POOL = env.str("BERTH_LIBVIRT_POOL", default="default")
# Seconds a guest has to shut down when stopped before it is powered off.
BERTH_LIBVIRT_SHUTDOWN_TIMEOUT = env.int("BERTH_LIBVIRT_SHUTDOWN_TIMEOUT", default=60)
# Times the reaper resumes one build's steps before failing it.
BERTH_REAPER_MAX_RESUMES = env.int("BERTH_REAPER_MAX_RESUMES", default=3)
# Alternate hosts kept per build (Nova's max_attempts - 1 by default).
BERTH_SCHEDULER_ALTERNATES = env.int("BERTH_SCHEDULER_ALTERNATES", default=3)
# MB of free RAM each recent build failure on a host counts against it when
# hosts are weighed (Nova's build_failure_weight_multiplier, same default:
# one failure outweighs any free RAM below about 1 TB); 0 turns it off.
BERTH_SCHEDULER_BUILD_FAILURE_WEIGHT = env.float(
    "BERTH_SCHEDULER_BUILD_FAILURE_WEIGHT", default=1000000.0
)
# A host's build failures stop counting once this many seconds pass without
# another (a success on it clears them at once, as in Nova).
BERTH_SCHEDULER_BUILD_FAILURE_WINDOW = env.int("BERTH_SCHEDULER_BUILD_FAILURE_WINDOW", default=3600)

# --- reservations -------------------------------------------------------------

# Seconds between a lease's "starting soon" heads-up and its start, and the
# bounds within which a lease may ask for its own (seed 002).
BERTH_LEASE_HEADS_UP = env.int("BERTH_LEASE_HEADS_UP", default=300)
BERTH_LEASE_HEADS_UP_MIN = env.int("BERTH_LEASE_HEADS_UP_MIN", default=0)
BERTH_LEASE_HEADS_UP_MAX = env.int("BERTH_LEASE_HEADS_UP_MAX", default=86400)
# before_end_lease fires this long before the end unless the lease says when.
BERTH_LEASE_BEFORE_END = env.int("BERTH_LEASE_BEFORE_END", default=3600)
# A host is cleaned for this long after a lease before the next may start.
BERTH_LEASE_CLEANING_SECONDS = env.int("BERTH_LEASE_CLEANING_SECONDS", default=0)
# At a lease's end its servers are deleted (Blazar's on_end behaviour).
BERTH_LEASE_END_DELETES_SERVERS = env.bool("BERTH_LEASE_END_DELETES_SERVERS", default=True)
# The longest lease, and the farthest ahead one may start, in seconds; -1
# lifts the bound. A week is what testbeds such as Chameleon grant (Blazar's
# MaxLeaseDurationFilter is off by default; one day is short for a
# multi-day experiment); 90 days lets a project plan a term ahead without
# booking the calendar for years. Quota resources, so a project's Quota row
# named "lease_duration" or "lease_start_ahead" overrides them; no role is
# exempt (as in Blazar: exemptions are per project).
BERTH_LEASE_MAX_DURATION = env.int("BERTH_LEASE_MAX_DURATION", default=7 * 86400)
BERTH_LEASE_MAX_START_AHEAD = env.int("BERTH_LEASE_MAX_START_AHEAD", default=90 * 86400)
BERTH_QUOTA_DEFAULTS |= {
    "lease_duration": BERTH_LEASE_MAX_DURATION,
    "lease_start_ahead": BERTH_LEASE_MAX_START_AHEAD,
}
# Where webhooks may be delivered: CIDRs and host names. Nothing else is
# contacted, whatever a subscription says (no requests into the operator's
# network on a tenant's behalf).
BERTH_WEBHOOK_ALLOWED = env.list("BERTH_WEBHOOK_ALLOWED", default=[])
# The whole of one attempt, connect to the last header of the answer: a
# receiver that trickles its answer is cut off here, not at the task's time
# limit, so a slow destination holds a notify worker for seconds at most.
BERTH_WEBHOOK_TIMEOUT = env.float("BERTH_WEBHOOK_TIMEOUT", default=5.0)
BERTH_WEBHOOK_MAX_ATTEMPTS = env.int("BERTH_WEBHOOK_MAX_ATTEMPTS", default=8)
# A pending delivery not attempted this many seconds after it was due lost
# its message; the resend sweep sends it again. Keep it above the longest
# wait a delivery may have in the notify queue, or busy ones are sent twice
# (harmless: an attempt claims its row, and a delivered one is not sent again).
BERTH_WEBHOOK_RESEND_AFTER = env.int("BERTH_WEBHOOK_RESEND_AFTER", default=300)
# The circuit breaker of each subscription: after this many failed attempts
# in a row its deliveries wait (BERTH_WEBHOOK_BREAKER_BACKOFF seconds,
# doubling with each failed probe, at most an hour); after
# BERTH_WEBHOOK_DISABLE_AFTER in a row berth disables it and tells the
# project (a "subscription.disabled" notification). With the defaults a
# destination is disabled after about nine hours of failing.
BERTH_WEBHOOK_BREAKER_AFTER = env.int("BERTH_WEBHOOK_BREAKER_AFTER", default=5)
BERTH_WEBHOOK_BREAKER_BACKOFF = env.float("BERTH_WEBHOOK_BREAKER_BACKOFF", default=60.0)
BERTH_WEBHOOK_DISABLE_AFTER = env.int("BERTH_WEBHOOK_DISABLE_AFTER", default=20)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["identity.auth.KeystoneTokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["identity.auth.ProjectRolePermission"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "config.negotiation.OpenStackContentNegotiation",
    "DEFAULT_PAGINATION_CLASS": None,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "EXCEPTION_HANDLER": "config.errors.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "berth",
    "DESCRIPTION": "Reserved, network-aware placement of servers. OpenStack-compatible "
    "Networking v2.0, Compute v2.1 and Reservation v1 APIs.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
}

# Bodies above this are refused before parsing (OpenStack APIs send small
# JSON documents; a large one is a mistake or an attack).
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("BERTH_MAX_BODY_BYTES", default=1024 * 1024)

# --- Celery -----------------------------------------------------------------

BROKER_DIR = DATA_DIR / "broker"
# The filesystem transport ignores the host; naming one keeps kombu quiet.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://localhost//")
if CELERY_BROKER_URL.startswith("filesystem://"):
    # Producer and consumer share one folder: that folder *is* the queue.
    for folder in ("queue", "control"):
        (BROKER_DIR / folder).mkdir(parents=True, exist_ok=True)
    # kombu's filesystem transport with the worker's drain cut to one polling
    # interval: see config/broker.py for the 2 s it cost every message.
    CELERY_BROKER_TRANSPORT = "config.broker:Transport"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "control_folder": str(BROKER_DIR / "control"),
        "store_processed": False,
        # The folder is polled; kombu's default of 1 s would add up to a
        # second to every step of a pipeline.
        "polling_interval": 0.05,
    }
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        # An unacked message is redelivered after this; every task's hard
        # time limit is far below it, so a live task is never run twice.
        "visibility_timeout": env.int("BERTH_BROKER_VISIBILITY_TIMEOUT", default=3600),
    }
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# The cache holds what is about the broker's messages (compute.tasks.send_new:
# whether a conductor's message is on its way), so it lives beside them: in
# the broker's Redis, or in a folder by the broker's when it is a folder. Every
# process of a deployment must share it, as they share the broker.
if CELERY_BROKER_URL.startswith("filesystem://"):
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(DATA_DIR / "cache"),
        }
    }
elif CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": CELERY_BROKER_URL,
            "KEY_PREFIX": "berth",
        }
    }
else:  # no cache all processes share: each request sends its message
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}}
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# Results live in the database rows the tasks write; chains need no backend.
CELERY_TASK_IGNORE_RESULT = True
# Ack after the task ran, and requeue if the worker dies mid-task: a task
# interrupted by SIGKILL runs again, which is why every task is idempotent.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# One message at a time per process: long builds never hold short ones back.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = env.int("BERTH_TASK_SOFT_TIME_LIMIT", default=240)
CELERY_TASK_TIME_LIMIT = env.int("BERTH_TASK_TIME_LIMIT", default=300)
# Named queues so an operator can give builds, lease events and webhook
# deliveries their own workers (`-Q build`); a plain worker consumes all.
# Spawns go to their host's queue, host.<name>, named when sent
# (compute.tasks), served by workers started with --host-queues.
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_QUEUES = [Queue(name) for name in ("default", "build", "events", "notify", "agents")]
CELERY_TASK_ROUTES = {
    # The reaper and the liveness sweep must not wait behind the builds
    # they look after, nor heartbeats behind either.
    "compute.reap_stuck_builds": {"queue": "default"},
    "compute.check_hosts": {"queue": "default"},
    "compute.agent_report": {"queue": "agents"},
    "compute.heartbeat": {"queue": "agents"},
    "compute.*": {"queue": "build"},
    "reservations.events.*": {"queue": "events"},
    "reservations.notifications.*": {"queue": "notify"},
}
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_WORKER_SEND_TASK_EVENTS = env.bool("BERTH_CELERY_EVENTS", default=False)
# django-celery-beat's DatabaseScheduler, which installs config.celery's
# beat_schedule at start; see config/beat.py.
CELERY_BEAT_SCHEDULER = "config.beat:Scheduler"
CELERY_TIMEZONE = "UTC"
# Reuse a worker's database connection across this many tasks instead of
# reconnecting for each (27 -> 103 three-task chains/s on PostgreSQL).
BERTH_CELERY_DB_REUSE_MAX = env.int("BERTH_CELERY_DB_REUSE_MAX", default=1000)

# --- logging ----------------------------------------------------------------

# "text" for people, "json" for log pipelines. Both carry the request id.
BERTH_LOG_FORMAT = env.str("BERTH_LOG_FORMAT", default="text")
BERTH_LOG_LEVEL = env.str("BERTH_LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "config.request_id.RequestIdFilter"}},
    "formatters": {
        "text": {
            "format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s",
        },
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(request_id)s %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": BERTH_LOG_FORMAT,
            "filters": ["request_id"],
        },
    },
    "root": {"handlers": ["console"], "level": BERTH_LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
    },
}
