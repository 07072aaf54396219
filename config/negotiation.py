"""Content negotiation as OpenStack's clients need it (a module of its own:
DRF imports it while its views module loads)."""

from rest_framework.negotiation import DefaultContentNegotiation


class OpenStackContentNegotiation(DefaultContentNegotiation):
    """openstacksdk posts server actions with an empty Accept header (it
    expects no body back); an empty header accepts anything, as Nova's
    WSGI stack treats it, instead of DRF's 406."""

    def get_accept_list(self, request):
        return [accept for accept in super().get_accept_list(request) if accept] or ["*/*"]
