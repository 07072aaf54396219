"""X-Auth-Token authentication and the project/role policy of the APIs."""

from dataclasses import dataclass
from functools import cache

from django.conf import settings
from django.contrib.auth import get_user_model
from rest_framework import authentication, exceptions, permissions

from identity.models import Project, Role
from identity.selectors import token_find
from identity.services import project_get_or_create


@dataclass(frozen=True)
class RequestContext:
    """Who is calling: OpenStack's request context, trimmed."""

    user_id: str
    # None for an unscoped token, which only the identity calls that lead
    # to a scoped one accept (``unscoped_allowed`` on the view).
    project: Project | None
    role: str

    @property
    def project_id(self):
        return self.project.id

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN

    @property
    def can_write(self) -> bool:
        return self.role in (Role.ADMIN, Role.MEMBER)


# The demo's user: the demo command's token is this user's, and in noauth
# mode every request acts as it.
DEMO_USER = "demo"


def user_id_of(user) -> str:
    """The user_id berth writes and shows for a Django user: the user name.

    The identity API shows it as the user's id and takes it where Keystone
    takes one (``/v3/users/{id}``), and it is what ``create_token --user``
    was given and what the admin lists (Keystone's LDAP backend, likewise,
    uses a name as the id). Never the row's number: that says nothing
    outside this database."""
    return user.get_username()


def user_ids_to_names(apps, model) -> None:
    """For a data migration: the model's rows written when user_id was the
    user's row number get the user's name instead."""
    users = apps.get_model(settings.AUTH_USER_MODEL)
    name_field = get_user_model().USERNAME_FIELD
    rows = model.objects.filter(user_id__regex=r"^[0-9]+$")
    for number in rows.values_list("user_id", flat=True).distinct():
        name = users.objects.filter(pk=int(number)).values_list(name_field, flat=True).first()
        if name is not None:
            rows.filter(user_id=number).update(user_id=name)


def user_context(*, user, project: Project | None, role: str) -> RequestContext:
    """A Django user acting in a project: the API's tokens, the admin
    console and the management commands all build it here, so one user
    has one user_id everywhere."""
    return RequestContext(user_id=user_id_of(user), project=project, role=role)


@cache
def _demo_project_id():
    return project_get_or_create(name=settings.BERTH_DEMO_PROJECT).pk


def demo_context() -> RequestContext:
    project = Project.objects.filter(pk=_demo_project_id()).first()
    if project is None:  # deleted since this process cached its id
        _demo_project_id.cache_clear()
        project = Project.objects.get(pk=_demo_project_id())
    return RequestContext(user_id=DEMO_USER, project=project, role=Role.ADMIN)


class KeystoneTokenAuthentication(authentication.BaseAuthentication):
    """Reads X-Auth-Token as Keystone's middleware would.

    ``request.user`` is the user id (a string) and ``request.auth`` the
    RequestContext. In noauth mode every request is an admin of the demo
    project, whatever token it carries: keystoneauth's ``none`` plugin sends
    ``X-Auth-Token: notused``.
    """

    def authenticate(self, request):
        if settings.BERTH_AUTH_MODE == "noauth":
            context = demo_context()
            return context.user_id, context
        raw = request.META.get("HTTP_X_AUTH_TOKEN")
        if not raw:
            return None
        token = token_find(raw=raw)
        if token is None:
            raise exceptions.AuthenticationFailed(
                "The request you have made requires authentication."
            )
        if token.membership is None:
            context = user_context(user=token.user, project=None, role="")
        else:
            context = user_context(
                user=token.user, project=token.membership.project, role=token.effective_role
            )
        return context.user_id, context

    def authenticate_header(self, request):
        # Without a WWW-Authenticate value DRF turns 401 into 403, which
        # keystoneauth does not retry with a token.
        return "Token"


class Authenticated(permissions.BasePermission):
    """A valid token, scoped to a project unless the view accepts an
    unscoped one (``unscoped_allowed``): elsewhere it has no project to act
    in, which Keystone's policies refuse with 403."""

    def has_permission(self, request, view):
        if not isinstance(request.auth, RequestContext):
            raise exceptions.NotAuthenticated("The request you have made requires authentication.")
        if request.auth.project is None and not getattr(view, "unscoped_allowed", False):
            raise exceptions.PermissionDenied("A token scoped to a project is required.")
        return True


class ProjectRolePermission(Authenticated):
    """Readers read, members and admins write; views name admin-only
    actions in ``admin_actions``. Which rows a caller sees is the
    queryset's business (``scope_to_project``)."""

    def has_permission(self, request, view):
        super().has_permission(request, view)
        context = request.auth
        if getattr(view, "action", None) in getattr(view, "admin_actions", ()):
            return context.is_admin
        return request.method in permissions.SAFE_METHODS or context.can_write


def scope_to_project(queryset, context: RequestContext, *, field: str = "project"):
    """Admins see every project's rows; everyone else only their own."""
    if context.is_admin:
        return queryset
    return queryset.filter(**{field: context.project})
