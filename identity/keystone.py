"""The Keystone v3 subset that OpenStack's clients need to find berth from
an ``auth_url`` alone: version discovery, tokens (password and token
methods, project scope) with the service catalog, validation and
revocation, and the caller's projects. A Keystone token is a berth token
(identity.models.Token): hashed at rest, expiring, revocable.

Errors are Keystone's: ``{"error": {"code", "title", "message"}}``
(config.errors, for paths outside the other APIs).
"""

import uuid

from django.conf import settings
from django.contrib.auth import authenticate, get_user_model
from django.contrib.auth.hashers import check_password
from django.http import JsonResponse
from django.urls import re_path
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from config.errors import BerthError, Forbidden, Invalid, NotFound
from identity import selectors, services
from identity.auth import Authenticated, user_id_of
from identity.models import ApplicationCredential, Membership, Project, Role, Token

DEFAULT_DOMAIN = {"id": "default", "name": "Default"}
IDENTITY_PREFIX = "identity"
# A role implies the ones below it, as Keystone's default implied roles.
IMPLIED = {Role.ADMIN: ["admin", "member", "reader"], Role.MEMBER: ["member", "reader"]}
KEYSTONE_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"
UNAUTHORIZED = "The request you have made requires authentication."


class Unauthorized(BerthError):
    status = 401
    type = "Unauthorized"


def _version(request) -> dict:
    return {
        "id": "v3.14",
        "status": "stable",
        "updated": "2020-04-07T00:00:00Z",
        "links": [{"rel": "self", "href": request.build_absolute_uri(f"/{IDENTITY_PREFIX}/v3/")}],
        "media-types": [
            {"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}
        ],
    }


def versions(request):
    """Keystone answers its root with 300 Multiple Choices."""
    return JsonResponse({"versions": {"values": [_version(request)]}}, status=300)


def v3(request):
    return JsonResponse({"version": _version(request)})


def _base_url(request) -> str:
    return settings.BERTH_PUBLIC_URL or request.build_absolute_uri("/").rstrip("/")


def catalog(request) -> list[dict]:
    """berth's services, each with a public, internal and admin endpoint
    under BERTH_PUBLIC_URL. Ids are stable: derived from the type."""
    base = _base_url(request)
    services_ = [
        ("identity", "keystone", f"{base}/{IDENTITY_PREFIX}"),
        ("compute", "nova", f"{base}/{settings.BERTH_COMPUTE_PREFIX}/v2.1"),
        ("network", "neutron", f"{base}/{settings.BERTH_NETWORKING_PREFIX}"),
        ("reservation", "blazar", f"{base}/{settings.BERTH_RESERVATION_PREFIX}/v1"),
        ("image", "glance", f"{base}/image"),
    ]
    return [
        {
            "id": uuid.uuid5(uuid.NAMESPACE_URL, kind).hex,
            "type": kind,
            "name": name,
            "endpoints": [
                {
                    "id": uuid.uuid5(uuid.NAMESPACE_URL, f"{kind}/{interface}").hex,
                    "interface": interface,
                    "region": "RegionOne",
                    "region_id": "RegionOne",
                    "url": url,
                }
                for interface in ("public", "internal", "admin")
            ],
        }
        for kind, name, url in services_
    ]


def _project(project: Project) -> dict:
    return {
        "id": project.pk.hex,
        "name": project.name,
        "domain_id": "default",
        "description": project.description,
        "enabled": True,
        "is_domain": False,
        "parent_id": "default",
        "tags": [],
    }


def token_body(request, token: Token, *, with_catalog: bool = True) -> dict:
    """Keystone's token: an unscoped one has no project, roles or catalog."""
    user = token.user
    body = {
        "methods": token.methods or ["token"],
        "user": {
            "domain": DEFAULT_DOMAIN,
            "id": user_id_of(user),
            "name": user.username,
            "password_expires_at": None,
        },
        "audit_ids": [token.digest[:22]],
        "expires_at": token.expires_at.strftime(KEYSTONE_TIME) if token.expires_at else None,
        "issued_at": token.created_at.strftime(KEYSTONE_TIME),
    }
    if token.membership is None:
        return {"token": body}
    project = token.membership.project
    body |= {
        "project": {"domain": DEFAULT_DOMAIN, "id": project.pk.hex, "name": project.name},
        "is_domain": False,
        "roles": [{"id": n, "name": n} for n in IMPLIED.get(token.effective_role, ["reader"])],
    }
    credential = token.application_credential
    if credential is not None:
        body["application_credential"] = {
            "id": credential.pk.hex,
            "name": credential.name,
            "restricted": not credential.unrestricted,
        }
    if with_catalog:
        body["catalog"] = catalog(request)
    return {"token": body}


def _object(value, what: str) -> dict:
    if not isinstance(value, dict):
        raise Invalid(f"Invalid input for field '{what}': expected an object.")
    return value


def _domain_ok(entity: dict) -> bool:
    """Only the default domain exists."""
    domain = entity.get("domain")
    if domain is None:
        return True
    domain = _object(domain, "domain")
    return domain.get("id", "default") == "default" and domain.get("name", "Default") in (
        "Default",
        "default",
    )


def _password_user(method: dict):
    """The user a password method names (by id, or by name in its domain),
    if the password is right; Unauthorized otherwise, in Keystone's words."""
    user = _object(method.get("user"), "user")
    password = user.get("password")
    name = user.get("id") or user.get("name")
    if not isinstance(name, str) or not isinstance(password, str) or not _domain_ok(user):
        raise Unauthorized(UNAUTHORIZED)
    if selectors.password_locked(username=name):
        raise Unauthorized(f"The account is locked for user: {name}.")
    found = authenticate(username=name, password=password)
    if found is None:
        services.password_failure_record(username=name)
        raise Unauthorized(UNAUTHORIZED)
    services.password_failures_clear(username=name)
    return found


def _token_method(request, method: dict) -> Token:
    raw = _object(method, "token").get("id") or request.headers.get("X-Auth-Token")
    token = selectors.token_find(raw=raw) if isinstance(raw, str) else None
    if token is None:
        raise Unauthorized(UNAUTHORIZED)
    return token


def _application_credential(method) -> ApplicationCredential:
    """The credential a method names (by id, or by name with its user), if
    its secret is right and it has not expired; Unauthorized otherwise."""
    method = _object(method, "application_credential")
    secret = method.get("secret")
    found = ApplicationCredential.objects.select_related("membership__user", "membership__project")
    found = found.filter(membership__user__is_active=True)
    if method.get("id") is not None:
        try:
            found = found.filter(pk=uuid.UUID(str(method["id"])))
        except ValueError:
            raise Unauthorized(UNAUTHORIZED) from None
    else:
        user = _object(method.get("user"), "application_credential.user")
        owner = user.get("id") or user.get("name")
        found = found.filter(name=method.get("name"), membership__user__username=owner)
    credential = found.first()
    if (
        credential is None
        or not isinstance(secret, str)
        or not check_password(secret, credential.secret_hash)
        or (credential.expires_at is not None and credential.expires_at <= timezone.now())
    ):
        raise Unauthorized(UNAUTHORIZED)
    return credential


def _membership(user, scope) -> Membership:
    """The user's role in the project ``scope`` names (by id, or by name in
    its domain); Unauthorized as Keystone answers a scope the user has no
    role in."""
    memberships = Membership.objects.select_related("user", "project").filter(user=user)
    project = _object(_object(scope, "scope").get("project"), "scope.project")
    wanted = project.get("id")
    if wanted is not None:
        try:
            found = memberships.filter(project_id=uuid.UUID(str(wanted))).first()
        except ValueError:
            found = None
    elif isinstance(project.get("name"), str) and _domain_ok(project):
        found = memberships.filter(project__name=project["name"]).first()
    else:
        raise Invalid("A project scope needs an id, or a name and a domain.")
    if found is None:
        raise Unauthorized("User has no access to project")
    return found


class Tokens(APIView):
    """POST issues a token (201, the token in X-Subject-Token); GET and HEAD
    validate the token in X-Subject-Token; DELETE revokes it."""

    schema = None  # Keystone's API reference documents it, not berth's schema
    unscoped_allowed = True

    def get_permissions(self):
        if self.request.method == "POST":
            return [AllowAny()]
        return [Authenticated()]

    def get_authenticators(self):
        # Issuing needs no token; one sent along (the token method's) must
        # not be refused before the body is read.
        if self.request.method == "POST":
            return []
        return super().get_authenticators()

    def post(self, request):
        body = request.data
        auth = _object(body.get("auth") if isinstance(body, dict) else None, "auth")
        identity = _object(auth.get("identity"), "auth.identity")
        methods = identity.get("methods")
        if not isinstance(methods, list) or not methods:
            raise Invalid("Invalid input for field 'identity/methods': expected a list.")
        scope = auth.get("scope")
        credential = None
        if "password" in methods:
            user = _password_user(_object(identity.get("password"), "password"))
            # No scope: an unscoped token (berth's users have no default
            # project), good for listing the user's projects and rescoping.
            membership = None
        elif "token" in methods:
            # No scope: the same scope again (a renewal).
            given = _token_method(request, identity.get("token"))
            user, membership = given.user, given.membership
        elif "application_credential" in methods:
            credential = _application_credential(identity.get("application_credential"))
            if scope is not None:
                raise Unauthorized("Application credentials cannot request a scope.")
            user, membership = credential.membership.user, credential.membership
        else:
            raise Unauthorized(f"Unsupported authentication method: {methods[0]}")
        if scope is not None and credential is None:
            membership = _membership(user, scope)
        token, raw = services.token_issue(
            user=user, membership=membership, methods=methods, credential=credential
        )
        response = Response(token_body(request, token), status=201)
        response["X-Subject-Token"] = raw
        return response

    def _subject(self, request) -> Token:
        raw = request.headers.get("X-Subject-Token")
        token = selectors.token_find(raw=raw) if raw else None
        if token is None:
            raise NotFound(f"Could not find token: {raw}.")
        return token

    def get(self, request):
        token = self._subject(request)
        nocatalog = "nocatalog" in request.query_params
        response = Response(token_body(request, token, with_catalog=not nocatalog))
        response["X-Subject-Token"] = request.headers["X-Subject-Token"]
        return response

    def head(self, request):
        self._subject(request)
        return Response(status=200)

    def delete(self, request):
        services.token_revoke(token=self._subject(request))
        return Response(status=204)


def _links(request) -> dict:
    return {"self": request.build_absolute_uri(), "previous": None, "next": None}


class AuthProjects(APIView):
    """The projects the caller's user has a role in."""

    schema = None
    unscoped_allowed = True
    permission_classes = [Authenticated]

    def get(self, request):
        user = get_user_model().objects.get(username=request.auth.user_id)
        projects = Project.objects.filter(memberships__user=user).order_by("name")
        return Response({"projects": [_project(p) for p in projects], "links": _links(request)})


class AuthCatalog(APIView):
    schema = None
    permission_classes = [Authenticated]

    def get(self, request):
        return Response({"catalog": catalog(request), "links": _links(request)})


# --- the admin calls: projects, users, roles, domains, assignments ------------------------


class AdminOnly(Authenticated):
    """Keystone's default policy on managing identity: admins only."""

    def has_permission(self, request, view):
        super().has_permission(request, view)
        if not request.auth.is_admin:
            raise Forbidden("You are not authorized to perform the requested action.")
        return True


class KeystoneAdminView(APIView):
    schema = None
    permission_classes = [AdminOnly]

    def body(self, key: str) -> dict:
        return _object(
            self.request.data.get(key) if isinstance(self.request.data, dict) else None, key
        )

    def collection(self, key: str, items: list) -> Response:
        return Response({key: items, "links": _links(self.request)})


def _self(request, path: str) -> dict:
    return {"self": request.build_absolute_uri(f"/{IDENTITY_PREFIX}/v3/{path}")}


def _project_entity(request, project: Project) -> dict:
    return {**_project(project), "links": _self(request, f"projects/{project.pk.hex}")}


def _user_entity(request, user) -> dict:
    user_id = user_id_of(user)
    return {
        "id": user_id,
        "name": user.username,
        "domain_id": "default",
        "enabled": user.is_active,
        "password_expires_at": None,
        "options": {},
        "links": _self(request, f"users/{user_id}"),
    }


def _role_entity(request, role: str) -> dict:
    return {
        "id": role,
        "name": role,
        "domain_id": None,
        "description": "",
        "options": {},
        "links": _self(request, f"roles/{role}"),
    }


def _domain_entity(request) -> dict:
    return {
        **DEFAULT_DOMAIN,
        "description": "The default domain",
        "enabled": True,
        "tags": [],
        "options": {},
        "links": _self(request, "domains/default"),
    }


def _find_project(project_id: str) -> Project:
    try:
        found = Project.objects.filter(pk=uuid.UUID(project_id)).first()
    except ValueError:
        found = None
    if found is None:
        raise NotFound(f"Could not find project: {project_id}.")
    return found


def _find_user(user_id: str):
    found = get_user_model().objects.filter(username=user_id).first()
    if found is None:
        raise NotFound(f"Could not find user: {user_id}.")
    return found


def _find_role(role_id: str) -> str:
    if role_id not in Role.values:
        raise NotFound(f"Could not find role: {role_id}.")
    return role_id


class Projects(KeystoneAdminView):
    def get(self, request):
        projects = Project.objects.order_by("name")
        if "name" in request.query_params:
            projects = projects.filter(name=request.query_params["name"])
        return self.collection("projects", [_project_entity(request, p) for p in projects])

    def post(self, request):
        fields = self.body("project")
        name = fields.get("name")
        if not isinstance(name, str) or not name or len(name) > 64:
            raise Invalid("Invalid input for field 'name': a name of 1 to 64 characters.")
        if fields.get("domain_id", "default") != "default":
            raise NotFound(f"Could not find domain: {fields['domain_id']}.")
        description = fields.get("description") or ""
        if not isinstance(description, str):
            raise Invalid("Invalid input for field 'description': a string.")
        project = services.project_create(name=name, description=description)
        return Response({"project": _project_entity(request, project)}, status=201)


class ProjectDetail(KeystoneAdminView):
    def get(self, request, project_id):
        return Response({"project": _project_entity(request, _find_project(project_id))})

    def patch(self, request, project_id):
        """`openstack project set --name/--description`."""
        fields = self.body("project")
        project = _find_project(project_id)
        name = fields.get("name", project.name)
        if not isinstance(name, str) or not name or len(name) > 64:
            raise Invalid("Invalid input for field 'name': a name of 1 to 64 characters.")
        description = fields.get("description", project.description)
        if not isinstance(description, str):
            raise Invalid("Invalid input for field 'description': a string.")
        project = services.project_update(project=project, name=name, description=description)
        return Response({"project": _project_entity(request, project)})

    def delete(self, request, project_id):
        services.project_delete(project=_find_project(project_id))
        return Response(status=204)


class ProjectUserRole(KeystoneAdminView):
    """PUT grants the role to the user on the project; HEAD tells whether it
    is granted; DELETE revokes it."""

    def _parts(self, project_id, user_id, role_id):
        return _find_project(project_id), _find_user(user_id), _find_role(role_id)

    def put(self, request, project_id, user_id, role_id):
        project, user, role = self._parts(project_id, user_id, role_id)
        services.role_grant(project=project, user=user, role=role)
        return Response(status=204)

    def head(self, request, project_id, user_id, role_id):
        project, user, role = self._parts(project_id, user_id, role_id)
        if not Membership.objects.filter(project=project, user=user, role=role).exists():
            raise NotFound(f"Could not find role assignment with role: {role}.")
        return Response(status=204)

    def delete(self, request, project_id, user_id, role_id):
        project, user, role = self._parts(project_id, user_id, role_id)
        services.role_revoke(project=project, user=user, role=role)
        return Response(status=204)


class Users(KeystoneAdminView):
    def get(self, request):
        users = get_user_model().objects.order_by("username")
        if "name" in request.query_params:
            users = users.filter(username=request.query_params["name"])
        return self.collection("users", [_user_entity(request, u) for u in users])

    def post(self, request):
        fields = self.body("user")
        name, password = fields.get("name"), fields.get("password")
        if not isinstance(name, str) or not name or len(name) > 150:
            raise Invalid("Invalid input for field 'name': a name of 1 to 150 characters.")
        if password is not None and not isinstance(password, str):
            raise Invalid("Invalid input for field 'password': a string.")
        if fields.get("domain_id", "default") != "default":
            raise NotFound(f"Could not find domain: {fields['domain_id']}.")
        enabled = fields.get("enabled", True)
        if not isinstance(enabled, bool):
            raise Invalid("Invalid input for field 'enabled': true or false.")
        user = services.user_create(name=name, password=password, enabled=enabled)
        return Response({"user": _user_entity(request, user)}, status=201)


class UserDetail(KeystoneAdminView):
    def get(self, request, user_id):
        return Response({"user": _user_entity(request, _find_user(user_id))})

    def patch(self, request, user_id):
        """`openstack user set --password/--enable/--disable`: a disabled
        user's tokens stop working at once (their next request is 401)."""
        fields = self.body("user")
        password = fields.get("password")
        if password is not None and (not isinstance(password, str) or not password):
            raise Invalid("Invalid input for field 'password': a non-empty string.")
        enabled = fields.get("enabled")
        if enabled is not None and not isinstance(enabled, bool):
            raise Invalid("Invalid input for field 'enabled': true or false.")
        user = services.user_update(user=_find_user(user_id), password=password, enabled=enabled)
        return Response({"user": _user_entity(request, user)})

    def delete(self, request, user_id):
        services.user_delete(user=_find_user(user_id))
        return Response(status=204)


class UserProjects(APIView):
    """The projects a user has a role in: the user's own, or any for admins."""

    schema = None
    unscoped_allowed = True
    permission_classes = [Authenticated]

    def get(self, request, user_id):
        if user_id != request.auth.user_id and not request.auth.is_admin:
            raise Forbidden("You are not authorized to perform the requested action.")
        user = _find_user(user_id)
        projects = Project.objects.filter(memberships__user=user).order_by("name")
        return Response({"projects": [_project(p) for p in projects], "links": _links(request)})


class Roles(KeystoneAdminView):
    def get(self, request):
        names = [r for r in Role.values if request.query_params.get("name", r) == r]
        return self.collection("roles", [_role_entity(request, r) for r in names])


class RoleDetail(KeystoneAdminView):
    def get(self, request, role_id):
        return Response({"role": _role_entity(request, _find_role(role_id))})


class Domains(KeystoneAdminView):
    def get(self, request):
        wanted = request.query_params.get("name", "Default")
        return self.collection("domains", [_domain_entity(request)] if wanted == "Default" else [])


class DomainDetail(KeystoneAdminView):
    def get(self, request, domain_id):
        if domain_id != "default":
            raise NotFound(f"Could not find domain: {domain_id}.")
        return Response({"domain": _domain_entity(request)})


class RoleAssignments(KeystoneAdminView):
    """Who has which role where; filters user.id, scope.project.id, role.id."""

    def get(self, request):
        params = request.query_params
        found = Membership.objects.select_related("user", "project").order_by("project__name")
        if "user.id" in params:
            found = found.filter(user__username=params["user.id"])
        if "scope.project.id" in params:
            found = found.filter(project=_find_project(params["scope.project.id"]))
        if "role.id" in params:
            found = found.filter(role=params["role.id"])
        assignments = [
            {
                "role": {"id": m.role},
                "user": {"id": user_id_of(m.user)},
                "scope": {"project": {"id": m.project.pk.hex}},
                "links": _self(
                    request,
                    f"projects/{m.project.pk.hex}/users/{user_id_of(m.user)}/roles/{m.role}",
                ),
            }
            for m in found
        ]
        return self.collection("role_assignments", assignments)


def _credential_entity(request, credential: ApplicationCredential) -> dict:
    user_id = user_id_of(credential.membership.user)
    return {
        "id": credential.pk.hex,
        "name": credential.name,
        "description": credential.description,
        "user_id": user_id,
        "project_id": credential.membership.project.pk.hex,
        "roles": [{"id": credential.role, "name": credential.role, "domain_id": None}],
        "expires_at": credential.expires_at.strftime(KEYSTONE_TIME)
        if credential.expires_at
        else None,
        "unrestricted": credential.unrestricted,
        "access_rules": [],
        "links": _self(request, f"users/{user_id}/application_credentials/{credential.pk.hex}"),
    }


class OwnCredentials(APIView):
    """A user's own application credentials, made from a token of the
    project they give access to (Keystone's policy: their owner only)."""

    schema = None
    unscoped_allowed = True
    permission_classes = [Authenticated]

    def _owner(self, user_id: str):
        if user_id != self.request.auth.user_id:
            raise Forbidden("You are not authorized to perform the requested action.")
        return ApplicationCredential.objects.select_related(
            "membership__user", "membership__project"
        ).filter(membership__user__username=user_id)

    def _one(self, user_id: str, credential_id: str) -> ApplicationCredential:
        try:
            found = self._owner(user_id).filter(pk=uuid.UUID(credential_id)).first()
        except ValueError:
            found = None
        if found is None:
            raise NotFound(f"Could not find Application Credential: {credential_id}.")
        return found


class ApplicationCredentials(OwnCredentials):
    def get(self, request, user_id):
        found = self._owner(user_id).order_by("name")
        if "name" in request.query_params:
            found = found.filter(name=request.query_params["name"])
        items = [_credential_entity(request, c) for c in found]
        return Response({"application_credentials": items, "links": _links(request)})

    def post(self, request, user_id):
        self._owner(user_id)
        data = request.data if isinstance(request.data, dict) else None
        fields = _object(
            data.get("application_credential") if data else None, "application_credential"
        )
        name = fields.get("name")
        if not isinstance(name, str) or not name or len(name) > 255:
            raise Invalid("Invalid input for field 'name': a name of 1 to 255 characters.")
        secret = fields.get("secret")
        if secret is not None and (not isinstance(secret, str) or not secret):
            raise Invalid("Invalid input for field 'secret': a non-empty string.")
        expires_at = fields.get("expires_at")
        if expires_at is not None:
            expires_at = parse_datetime(expires_at) if isinstance(expires_at, str) else None
            if expires_at is None or timezone.is_naive(expires_at):
                raise Invalid("Invalid input for field 'expires_at': an ISO 8601 time with zone.")
        roles = fields.get("roles") or []
        if not isinstance(roles, list):
            raise Invalid("Invalid input for field 'roles': a list.")
        wanted = []
        for role in roles:
            role = _object(role, "roles")
            wanted.append(role.get("name") or role.get("id"))
        if request.auth.project is None:
            raise Forbidden("An application credential is made with a token of its project.")
        token = selectors.token_find(raw=request.headers["X-Auth-Token"])
        credential = token.application_credential
        if credential is not None and not credential.unrestricted:
            raise Forbidden(
                "Using method 'application_credential' is not allowed for managing "
                "additional application credentials."
            )
        credential, secret = services.application_credential_create(
            membership=token.membership,
            role_held=token.effective_role,
            name=name,
            description=str(fields.get("description") or ""),
            secret=secret,
            roles=wanted,
            expires_at=expires_at,
            unrestricted=fields.get("unrestricted") is True,
        )
        body = _credential_entity(request, credential) | {"secret": secret}
        return Response({"application_credential": body}, status=201)


class ApplicationCredentialDetail(OwnCredentials):
    def get(self, request, user_id, credential_id):
        credential = self._one(user_id, credential_id)
        return Response({"application_credential": _credential_entity(request, credential)})

    def delete(self, request, user_id, credential_id):
        services.application_credential_delete(credential=self._one(user_id, credential_id))
        return Response(status=204)


ID = r"(?P<{}>[^/]+)"
urlpatterns = [
    re_path(r"^auth/tokens/?$", Tokens.as_view()),
    re_path(r"^auth/projects/?$", AuthProjects.as_view()),
    re_path(r"^auth/catalog/?$", AuthCatalog.as_view()),
    re_path(r"^projects/?$", Projects.as_view()),
    re_path(rf"^projects/{ID.format('project_id')}/?$", ProjectDetail.as_view()),
    re_path(
        rf"^projects/{ID.format('project_id')}/users/{ID.format('user_id')}"
        rf"/roles/{ID.format('role_id')}/?$",
        ProjectUserRole.as_view(),
    ),
    re_path(r"^users/?$", Users.as_view()),
    re_path(rf"^users/{ID.format('user_id')}/?$", UserDetail.as_view()),
    re_path(rf"^users/{ID.format('user_id')}/projects/?$", UserProjects.as_view()),
    re_path(
        rf"^users/{ID.format('user_id')}/application_credentials/?$",
        ApplicationCredentials.as_view(),
    ),
    re_path(
        rf"^users/{ID.format('user_id')}/application_credentials/{ID.format('credential_id')}/?$",
        ApplicationCredentialDetail.as_view(),
    ),
    re_path(r"^roles/?$", Roles.as_view()),
    re_path(rf"^roles/{ID.format('role_id')}/?$", RoleDetail.as_view()),
    re_path(r"^domains/?$", Domains.as_view()),
    re_path(rf"^domains/{ID.format('domain_id')}/?$", DomainDetail.as_view()),
    re_path(r"^role_assignments/?$", RoleAssignments.as_view()),
]
