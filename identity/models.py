import uuid

from django.conf import settings
from django.db import models


class Project(models.Model):
    """A tenant. Every user-visible resource belongs to exactly one project."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=64, unique=True)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Role(models.TextChoices):
    # Cloud-wide administrator, as OpenStack's legacy "admin" role: sees and
    # manages every project's resources and the admin-only fields.
    ADMIN = "admin"
    MEMBER = "member"
    READER = "reader"


class Membership(models.Model):
    """A user's role in a project (Keystone's role assignment)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user", "project"], name="membership_one_role_per_project"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.project} as {self.role}"


# Roles from the least to the most: a role implies the ones before it.
ROLE_ORDER = [Role.READER, Role.MEMBER, Role.ADMIN]


def lesser_role(first: str, second: str) -> str:
    return min(first, second, key=ROLE_ORDER.index)


class ApplicationCredential(models.Model):
    """Keystone's application credential: a secret that signs its user in
    to one project with at most the role it was made with, for scripts and
    tools that must not hold the user's password. Goes with the membership
    (the user leaving the project ends it)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    membership = models.ForeignKey(
        Membership, on_delete=models.CASCADE, related_name="application_credentials"
    )
    name = models.CharField(max_length=255)
    description = models.TextField(blank=True)
    # Django's password hashers: a secret the user chose may be weak.
    secret_hash = models.CharField(max_length=255, editable=False)
    role = models.CharField(max_length=16, choices=Role.choices)
    expires_at = models.DateTimeField(null=True, blank=True)
    unrestricted = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["membership", "name"], name="application_credential_name_once"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.membership})"


class Token(models.Model):
    """An API token. Only its SHA-256 digest is stored; the token itself is
    shown once, when it is created."""

    digest = models.CharField(max_length=64, unique=True, editable=False)
    # The first characters, so an operator can tell tokens apart in the admin.
    prefix = models.CharField(max_length=8, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="tokens", editable=False
    )
    # The project and role the token is scoped to; none for an unscoped
    # token (Keystone's: it proves who the user is, to get a scoped one).
    membership = models.ForeignKey(
        Membership, on_delete=models.CASCADE, null=True, blank=True, related_name="tokens"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True, db_index=True)
    # How it was obtained, as Keystone's token body says ("password",
    # "token"); none for a token made by an operator (create_token).
    methods = models.JSONField(default=list, blank=True, editable=False)
    # At most this role, when less than the membership's (a token of an
    # application credential made with a lesser role).
    role = models.CharField(max_length=16, choices=Role.choices, blank=True, editable=False)
    application_credential = models.ForeignKey(
        ApplicationCredential, on_delete=models.CASCADE, null=True, blank=True, editable=False
    )

    def __str__(self) -> str:
        return f"{self.prefix}... ({self.membership or f'{self.user}, unscoped'})"

    @property
    def effective_role(self) -> str:
        granted = self.membership.role
        return lesser_role(granted, self.role) if self.role else granted


class PasswordFailure(models.Model):
    """Failed password sign-ins of one user name in a row, and until when
    the name is locked out after too many (Keystone's lockout_* options)."""

    username = models.CharField(max_length=150, unique=True)
    failures = models.PositiveIntegerField(default=0)
    locked_until = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True, db_index=True)

    def __str__(self) -> str:
        return f"{self.username}: {self.failures} failures"


class Quota(models.Model):
    """A per-project override of a default limit from BERTH_QUOTA_DEFAULTS."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="quotas")
    resource = models.CharField(max_length=32)
    limit = models.IntegerField(help_text="-1 means unlimited")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "resource"], name="quota_one_per_resource"),
            models.CheckConstraint(
                condition=models.Q(limit__gte=-1), name="quota_limit_min_minus_one"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.project}: {self.resource} <= {self.limit}"
