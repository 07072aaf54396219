"""The identity models in the admin: projects with their members and quota
overrides, tokens, application credentials and lockouts."""

from django import forms
from django.conf import settings
from django.contrib import admin

from config.admin import ServiceAdmin, with_seconds
from identity import services
from identity.models import (
    ApplicationCredential,
    Membership,
    PasswordFailure,
    Project,
    Quota,
    Token,
)
from identity.quotas import quota_clear, quota_limits, quota_set, quota_usage


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


def quota_resources():
    return [(resource, resource) for resource in sorted(settings.BERTH_QUOTA_DEFAULTS)]


class QuotaForm(forms.ModelForm):
    # A limit on a name berth does not count (a typo) would be ignored.
    resource = forms.ChoiceField(choices=quota_resources)


class QuotaInline(admin.TabularInline):
    model = Quota
    form = QuotaForm
    extra = 0


@admin.register(Project)
class ProjectAdmin(ServiceAdmin):
    """Projects, their members' roles and their quota overrides, each
    written by the service the identity API calls."""

    list_display = ["name", "id", "created"]
    search_fields = ["name", "id"]
    readonly_fields = ["id", "created_at", "quota_summary"]
    add_fields = ("name", "description")
    change_fields = ("name", "description")
    inlines = [MembershipInline, QuotaInline]
    created = with_seconds("created_at", "created")

    @admin.display(description="quota usage")
    def quota_summary(self, project):
        if project.pk is None:
            return "-"
        limits, usage = quota_limits(project=project), quota_usage(project=project)

        def shown(resource: str, limit: int) -> str:
            bound = "∞" if limit < 0 else str(limit)
            if resource in usage:
                return f"{resource} {usage[resource]}/{bound}"
            # A bound on each lease (its duration, how far ahead it starts)
            # has no usage to count.
            return f"{resource} ≤ {bound}"

        return ", ".join(shown(resource, limit) for resource, limit in sorted(limits.items()))

    def service_add(self, request, values):
        return services.project_create(**values)

    def service_change(self, request, project, changes):
        values = {"name": project.name, "description": project.description} | changes
        return services.project_update(project=project, **values)

    def service_delete(self, request, project):
        services.project_delete(project=project)

    def save_formset(self, request, form, formset, change):
        """A member's role or a quota override, through its service: the
        rows removed first, then those added or changed (a row whose user
        or resource changed is the old one removed, the new one written; a
        new role keeps the membership, its tokens and credentials).
        Says what it did as formset.save() would, for the admin's log."""
        project = form.instance
        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
        for row in formset.forms:
            was = row.instance if row.instance.pk else None
            if was is not None and row in formset.deleted_forms:
                formset.deleted_objects.append(self._remove(project, was.pk, type(was)))
            elif was is not None and {"user", "resource"} & set(row.changed_data):
                self._remove(project, was.pk, type(was))
        for row in formset.forms:
            if row not in formset.deleted_forms and row.has_changed():
                written = self._write(project, row.cleaned_data)
                if row.instance.pk is None:
                    formset.new_objects.append(written)
                else:
                    formset.changed_objects.append((written, row.changed_data))

    def _remove(self, project, pk, model):
        row = model.objects.get(pk=pk)
        if isinstance(row, Membership):
            services.role_revoke(project=project, user=row.user, role=row.role)
        else:
            quota_clear(project=project, resource=row.resource)
        return row

    def _write(self, project, data):
        if "user" in data:
            return services.role_grant(project=project, user=data["user"], role=data["role"])
        return quota_set(project=project, resource=data["resource"], limit=data["limit"])


@admin.register(Membership)
class MembershipAdmin(ServiceAdmin):
    list_display = ["user", "project", "role"]
    list_filter = ["role"]
    list_select_related = ["user", "project"]
    search_fields = ["user__username", "project__name"]
    autocomplete_fields = ["user", "project"]
    add_fields = ("user", "project", "role")
    change_fields = ("role",)

    def service_add(self, request, values):
        return services.role_grant(**values)

    def service_change(self, request, membership, changes):
        return services.role_grant(
            project=membership.project, user=membership.user, role=changes["role"]
        )

    def service_delete(self, request, membership):
        services.role_revoke(project=membership.project, user=membership.user, role=membership.role)


@admin.register(Token)
class TokenAdmin(ServiceAdmin):
    """Made with `manage.py create_token` or the identity API (the raw
    value is shown only there, once); the admin lists and revokes them."""

    list_display = ["prefix", "user", "membership", "created", "expires"]
    list_select_related = ["user", "membership__user", "membership__project"]
    list_filter = ["membership__role"]
    search_fields = ["prefix", "user__username", "membership__project__name"]
    created = with_seconds("created_at", "created")
    expires = with_seconds("expires_at", "expires")

    def service_delete(self, request, token):
        services.token_revoke(token=token)


@admin.register(ApplicationCredential)
class ApplicationCredentialAdmin(ServiceAdmin):
    """Made by their users through the identity API (the secret is shown
    only then); the admin lists them and deletes them, with their tokens."""

    list_display = ["name", "membership", "role", "created", "expires"]
    list_select_related = ["membership__user", "membership__project"]
    list_filter = ["role", "unrestricted"]
    search_fields = ["name", "membership__user__username", "membership__project__name"]
    created = with_seconds("created_at", "created")
    expires = with_seconds("expires_at", "expires")

    def service_delete(self, request, credential):
        services.application_credential_delete(credential=credential)


@admin.register(PasswordFailure)
class PasswordFailureAdmin(ServiceAdmin):
    """Failed password sign-ins; deleting a row lifts that user's lockout."""

    list_display = ["username", "failures", "locked_until", "updated_at"]
    search_fields = ["username"]

    def service_delete(self, request, failure):
        services.password_failures_clear(username=failure.username)
