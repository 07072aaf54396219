"""OpenAPI description of berth's token auth (for drf-spectacular)."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class KeystoneTokenScheme(OpenApiAuthenticationExtension):
    target_class = "config.auth.KeystoneTokenAuthentication"
    name = "XAuthToken"

    def get_security_definition(self, auto_schema):
        return {"type": "apiKey", "in": "header", "name": "X-Auth-Token"}
