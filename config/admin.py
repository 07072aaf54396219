"""The admin site: its name, the health probes, and the base every app's
admin uses for models whose rules live in a service (``ServiceAdmin``)."""

from django import forms
from django.contrib import admin, messages
from django.db import transaction
from django.http import HttpResponseRedirect
from django.urls import reverse
from django.utils import timezone
from django.utils.formats import date_format

from config.errors import BerthError
from config.models import HealthProbe

admin.site.site_header = "berth administration"
admin.site.site_title = "berth"
admin.site.index_title = "Operator dashboard"
# "View site" opens the API's interactive documentation: berth has no other
# web page, and its root is an API path that answers a JSON 404.
admin.site.site_url = "/api/docs"


# --- writes through services -----------------------------------------------------------


class ServiceForm(forms.ModelForm):
    """A ModelAdmin's form that a ServiceAdmin saves through its service.

    The service runs when the form is validated, so a refusal (BerthError)
    is shown as the form's error with the operator's input kept, and the
    admin's own save then has nothing left to write. It runs inside the
    admin's transaction; ServiceAdmin rolls back what it wrote if the page
    is shown again instead of saved (an invalid inline formset)."""

    service_admin: "ServiceAdmin"
    request = None

    def full_clean(self):
        super().full_clean()
        if not self.is_bound or self.errors:
            return
        try:
            # A savepoint: a service that stops half-way (some write in the
            # caller's transaction) leaves nothing behind when it refuses.
            with transaction.atomic():
                self.instance = self.service_admin.service_write(self.request, self)
        except BerthError as error:
            self.add_error(None, error.message)


class ServiceAdmin(admin.ModelAdmin):
    """The admin of a model whose invariants live in a service: every write
    goes through the service the API calls, with the same errors.

    - ``change_fields``: what the change form may edit (``service_change``
      writes it); every other field is shown read-only.
    - ``add_fields``: the add form (``service_add`` writes it); none, no add.
    - ``service_delete``: deletes one object; not defined, no delete.
    Actions and the delete refuse all or nothing: a BerthError rolls back
    the whole request and is shown as an error message."""

    form = ServiceForm
    change_fields: tuple[str, ...] = ()
    add_fields: tuple[str, ...] = ()
    service_delete = None

    # --- which fields the forms show and edit

    def get_change_fields(self, request, obj) -> tuple[str, ...]:
        return self.change_fields

    def get_fields(self, request, obj=None):
        if obj is None:
            return list(self.add_fields)
        if self.fields:
            return list(self.fields)
        names = [f.name for f in self.opts.concrete_fields]
        return names + [f for f in self.readonly_fields if f not in names]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        editable = self.get_change_fields(request, obj)
        return [name for name in self.get_fields(request, obj) if name not in editable]

    def has_add_permission(self, request):
        return bool(self.add_fields) and super().has_add_permission(request)

    def has_delete_permission(self, request, obj=None):
        return self.service_delete is not None and super().has_delete_permission(request, obj)

    # --- writes

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        # modelform_factory made this class for this request alone.
        form.service_admin, form.request = self, request
        return form

    def service_write(self, request, form):
        """Called by ServiceForm once the form is valid; returns the saved object."""
        if form.instance._state.adding:
            values = {name: form.cleaned_data[name] for name in self.add_fields}
            return self.service_add(request, values)
        changes = {name: form.cleaned_data[name] for name in form.changed_data}
        if not changes:
            return form.instance
        return self.service_change(request, form.instance, changes)

    def service_add(self, request, values: dict):
        raise NotImplementedError(f"{type(self).__name__} has add_fields but no service_add")

    def service_change(self, request, obj, changes: dict):
        raise NotImplementedError(f"{type(self).__name__} has change_fields but no service_change")

    def save_model(self, request, obj, form, change):
        # ServiceForm saved it through the service; a save() here would write
        # every field of a copy read before the service's row lock.
        pass

    def delete_model(self, request, obj):
        self.service_delete(request, obj)

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            self.service_delete(request, obj)

    def get_deleted_objects(self, objs, request):
        deleted, counts, _, protected = super().get_deleted_objects(objs, request)
        # What goes with the object is its service's business (a lease takes
        # its reservations and events along), not a matter of the related
        # models' admins, which offer no delete of their own.
        return deleted, counts, set(), protected

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if context["adminform"].form.is_bound:
            # The form is shown again instead of saved: undo what its
            # service wrote while it was validated.
            transaction.set_rollback(True)
        if change and not self.get_change_fields(request, obj):
            # Nothing on the page can be edited: no button says otherwise.
            context.update(show_save=False, show_save_and_continue=False)
        return super().render_change_form(request, context, add, change, form_url, obj)

    def delete_view(self, request, object_id, extra_context=None):
        try:
            return super().delete_view(request, object_id, extra_context)
        except BerthError as error:  # the view's transaction, log entry included, rolled back
            self.message_user(request, error.message, messages.ERROR)
            change = f"admin:{self.opts.app_label}_{self.opts.model_name}_change"
            return HttpResponseRedirect(reverse(change, args=[object_id]))

    def changelist_view(self, request, extra_context=None):
        if request.method != "POST":
            return super().changelist_view(request, extra_context)
        try:
            with transaction.atomic():
                return super().changelist_view(request, extra_context)
        except BerthError as error:
            self.message_user(request, error.message, messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())


def timestamp(value) -> str:
    return date_format(timezone.localtime(value), "Y-m-d H:i:s") if value else "-"


def with_seconds(field: str, description: str | None = None):
    """A list or page column showing a time to the second: the admin's date
    format stops at minutes, and a heads-up 30 s before a start would read
    the same as the start."""

    @admin.display(description=description or field.replace("_", " "), ordering=field)
    def show(self, obj):
        return timestamp(getattr(obj, field))

    return show


def bad_news_flag(field: str, description: str | None = None):
    """A flag whose being set is bad news (degraded, missing resources): as a
    word, not as the admin's boolean icons, whose red cross would make a
    healthy "No" look like an alarm."""

    @admin.display(description=description or field.replace("_", " "), ordering=field)
    def show(self, obj):
        return "yes" if getattr(obj, field) else "no"

    return show


class ReadOnlyInline(admin.TabularInline):
    """Rows shown beside their parent; they change through their own page,
    the API or the services, never through the parent's form."""

    extra = 0
    show_change_link = True

    def get_readonly_fields(self, request, obj=None):
        return self.fields

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(HealthProbe)
class HealthProbeAdmin(admin.ModelAdmin):
    """Written by `manage.py healthcheck` and the worker that answers it."""

    list_display = ["id", "created", "answered", "worker", "request_id"]
    search_fields = ["worker", "request_id"]
    readonly_fields = ["id", "created_at", "answered_at", "worker", "request_id"]
    created = with_seconds("created_at", "created")
    answered = with_seconds("answered_at", "answered")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
