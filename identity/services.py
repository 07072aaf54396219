"""Writes for projects, users, memberships, tokens and application credentials."""

import hashlib
import secrets
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.db import IntegrityError, transaction
from django.db.models.deletion import ProtectedError
from django.utils import timezone

from config.errors import Conflict, Forbidden, NotFound, in_use_by
from identity.models import (
    ROLE_ORDER,
    ApplicationCredential,
    Membership,
    PasswordFailure,
    Project,
    Role,
    Token,
)


def token_digest(raw: str) -> str:
    # Tokens are 256 random bits, so a plain SHA-256 is enough: there is no
    # dictionary to attack, and lookups stay a single indexed equality.
    return hashlib.sha256(raw.encode()).hexdigest()


def project_get_or_create(*, name: str) -> Project:
    project, _ = Project.objects.get_or_create(name=name)
    return project


@transaction.atomic
def membership_ensure(*, project_name: str, username: str, role: str) -> Membership:
    """The user's membership in the project with this role; creates the
    project, the user and the membership if missing, updates the role."""
    if role not in Role.values:
        raise ValueError(f"role must be one of {', '.join(Role.values)}, not {role!r}")
    project = project_get_or_create(name=project_name)
    user, _ = get_user_model().objects.get_or_create(username=username)
    membership, _ = Membership.objects.update_or_create(
        user=user, project=project, defaults={"role": role}
    )
    return membership


@transaction.atomic
def user_password_set(*, project_name: str, username: str, role: str, password: str) -> Membership:
    """The user's role in the project (membership_ensure) and its password,
    hashed by Django's password hashers."""
    membership = membership_ensure(project_name=project_name, username=username, role=role)
    membership.user.set_password(password)
    membership.user.save(update_fields=["password"])
    return membership


def token_create(
    *, project_name: str, username: str, role: str, expires_at: datetime | None = None
) -> tuple[Token, str]:
    """A new token for the user's role in the project. Returns the row and
    the raw token, which is not stored and cannot be shown again."""
    with transaction.atomic():
        membership = membership_ensure(project_name=project_name, username=username, role=role)
        raw = secrets.token_urlsafe(32)
        token = Token.objects.create(
            digest=token_digest(raw),
            prefix=raw[:8],
            user=membership.user,
            membership=membership,
            expires_at=expires_at,
        )
    return token, raw


# --- the identity API's admin calls (Keystone's words in errors) -----------------------


def project_create(*, name: str, description: str = "") -> Project:
    try:
        with transaction.atomic():
            return Project.objects.create(name=name, description=description)
    except IntegrityError:
        raise Conflict(
            f"Conflict occurred attempting to store project - Duplicate entry found with "
            f"name {name}."
        ) from None


def project_delete(*, project: Project) -> None:
    """Refused while the project still owns resources (its networks,
    servers, leases...): Keystone would orphan them, berth keeps them."""
    try:
        with transaction.atomic():
            project.delete()
    except ProtectedError as error:
        raise Conflict(
            f"Project {project.pk.hex} still owns resources: {in_use_by(error)}."
        ) from None


def project_update(*, project: Project, name: str, description: str) -> Project:
    try:
        with transaction.atomic():
            project.name, project.description = name, description
            project.save(update_fields=["name", "description"])
    except IntegrityError:
        raise Conflict(
            f"Conflict occurred attempting to store project - Duplicate entry found with "
            f"name {name}."
        ) from None
    return project


def user_update(*, user, password: str | None, enabled: bool | None):
    """A new password, or the user enabled or disabled (a disabled user's
    tokens are refused from their next request: token_find)."""
    if password is not None:
        user.set_password(password)
        password_failures_clear(username=user.username)
    if enabled is not None:
        user.is_active = enabled
    user.save(update_fields=["password", "is_active"])
    return user


def user_delete(*, user) -> None:
    """The user, with their roles, tokens and application credentials."""
    user.delete()


def user_create(*, name: str, password: str | None, enabled: bool = True):
    User = get_user_model()
    try:
        with transaction.atomic():
            user = User(username=name, is_active=enabled)
            if password:
                user.set_password(password)
            else:
                user.set_unusable_password()
            user.save()
            return user
    except IntegrityError:
        raise Conflict(
            f"Conflict occurred attempting to store user - Duplicate entry found with name "
            f"{name} at domain ID default."
        ) from None


def role_grant(*, project: Project, user, role: str) -> Membership:
    """The user's role in the project; berth holds one role per project, so
    granting another replaces it (the higher one implies the lower)."""
    membership, _ = Membership.objects.update_or_create(
        user=user, project=project, defaults={"role": role}
    )
    return membership


def role_revoke(*, project: Project, user, role: str) -> None:
    deleted, _ = Membership.objects.filter(user=user, project=project, role=role).delete()
    if not deleted:
        raise NotFound(
            f"Could not find role assignment with role: {role}, user or group: "
            f"{user.username}, project, domain, or system: {project.pk.hex}."
        )


def token_issue(
    *,
    user,
    membership: Membership | None,
    methods: list[str],
    credential: ApplicationCredential | None = None,
) -> tuple[Token, str]:
    """A token of the identity API for the user, scoped to the membership's
    project and role (none: unscoped; through an application credential,
    with at most its role), lasting BERTH_TOKEN_LIFETIME, and no longer
    than the credential. Returns the row and the raw token, shown once."""
    raw = secrets.token_urlsafe(32)
    expires_at = timezone.now() + timedelta(seconds=settings.BERTH_TOKEN_LIFETIME)
    if credential is not None and credential.expires_at is not None:
        expires_at = min(expires_at, credential.expires_at)
    token = Token.objects.create(
        digest=token_digest(raw),
        prefix=raw[:8],
        user=user,
        membership=membership,
        methods=methods,
        role=credential.role if credential else "",
        application_credential=credential,
        expires_at=expires_at,
    )
    return token, raw


def application_credential_create(
    *,
    membership: Membership,
    role_held: str,
    name: str,
    description: str,
    secret: str | None,
    roles: list[str],
    expires_at: datetime | None,
    unrestricted: bool,
) -> tuple[ApplicationCredential, str]:
    """A credential for the membership's project with the least of the
    ``roles`` asked for (all those of ``role_held`` when none), each of
    which ``role_held``, the caller's token's role, must imply: a token
    capped below its membership's role passes on no more than its cap.
    Returns it and its secret (generated unless given), shown once."""
    held = ROLE_ORDER[: ROLE_ORDER.index(role_held) + 1]
    for role in roles:
        if role not in held:
            raise Forbidden(f"Role {role} is not one of the user's roles on the project.")
    role = min(roles, key=ROLE_ORDER.index) if roles else role_held
    secret = secret or secrets.token_urlsafe(48)
    try:
        with transaction.atomic():
            credential = ApplicationCredential.objects.create(
                membership=membership,
                name=name,
                description=description,
                secret_hash=make_password(secret),
                role=role,
                expires_at=expires_at,
                unrestricted=unrestricted,
            )
    except IntegrityError:
        raise Conflict(
            f"Conflict occurred attempting to store application_credential - Duplicate "
            f"entry found with name {name}."
        ) from None
    return credential, secret


def application_credential_delete(*, credential: ApplicationCredential) -> None:
    """The credential, and the tokens it issued (cascade)."""
    credential.delete()


def token_revoke(*, token: Token) -> None:
    Token.objects.filter(pk=token.pk).delete()


def token_purge_expired(*, now: datetime | None = None) -> int:
    """Expired tokens, and failed sign-ins nobody repeated for a lockout's
    length (so names an attacker tried do not pile up)."""
    now = now or timezone.now()
    deleted, _ = Token.objects.filter(expires_at__lte=now).delete()
    quiet = now - timedelta(seconds=settings.BERTH_LOCKOUT_SECONDS)
    PasswordFailure.objects.filter(updated_at__lt=quiet).delete()
    return deleted


def password_failure_record(*, username: str) -> None:
    """One more failed sign-in of ``username``; the last one allowed locks
    the name out for BERTH_LOCKOUT_SECONDS."""
    limit = settings.BERTH_LOCKOUT_FAILURES
    if limit <= 0:
        return
    with transaction.atomic():
        failure, _ = PasswordFailure.objects.select_for_update().get_or_create(username=username)
        failure.failures += 1
        if failure.failures >= limit:
            failure.failures = 0
            failure.locked_until = timezone.now() + timedelta(
                seconds=settings.BERTH_LOCKOUT_SECONDS
            )
        failure.save()


def password_failures_clear(*, username: str) -> None:
    PasswordFailure.objects.filter(username=username).delete()
