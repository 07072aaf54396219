"""The admin index shows the operator dashboard (templates/admin/index.html).

The default site's index is wrapped to pass the counts in: a custom
AdminSite would move every app's registrations, and a context processor would
count on every page. Admin's autodiscovery imports this module before the
URLconf reads admin.site.urls, so the URL resolves to the wrapper."""

from django.contrib import admin

from console.dashboard import dashboard_metrics

_admin_index = admin.site.index


def index_with_dashboard(request, extra_context=None):
    metrics = [m for m in dashboard_metrics() if request.user.has_perm(m.perm)]
    return _admin_index(request, extra_context={"dashboard": metrics, **(extra_context or {})})


admin.site.index = index_with_dashboard
