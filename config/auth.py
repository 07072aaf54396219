"""X-Auth-Token authentication and the project/role policy of the APIs."""

from dataclasses import dataclass
from functools import cache

from django.conf import settings
from rest_framework import authentication, exceptions, permissions

from config.models import Project, Role
from config.selectors import membership_for_token
from config.services import project_get_or_create


@dataclass(frozen=True)
class RequestContext:
    """Who is calling: OpenStack's request context, trimmed."""

    user_id: str
    project: Project
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


@cache
def _demo_project_id():
    return project_get_or_create(name=settings.BERTH_DEMO_PROJECT).pk


def demo_context() -> RequestContext:
    project = Project.objects.filter(pk=_demo_project_id()).first()
    if project is None:  # deleted since this process cached its id
        _demo_project_id.cache_clear()
        project = Project.objects.get(pk=_demo_project_id())
    return RequestContext(user_id="demo", project=project, role=Role.ADMIN)


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
        membership = membership_for_token(raw=raw)
        if membership is None:
            raise exceptions.AuthenticationFailed(
                "The request you have made requires authentication."
            )
        context = RequestContext(
            user_id=str(membership.user_id), project=membership.project, role=membership.role
        )
        return context.user_id, context

    def authenticate_header(self, request):
        # Without a WWW-Authenticate value DRF turns 401 into 403, which
        # keystoneauth does not retry with a token.
        return "Token"


class Authenticated(permissions.BasePermission):
    def has_permission(self, request, view):
        if not isinstance(request.auth, RequestContext):
            raise exceptions.NotAuthenticated("The request you have made requires authentication.")
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
