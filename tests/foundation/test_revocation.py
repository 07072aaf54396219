"""Revoking access takes effect on the next request to every API: the user
deactivated, the project deleted, the role removed (membership deleted)."""

import pytest

from identity.auth import KeystoneTokenAuthentication
from identity.models import Membership

URLS = ["/networking/v2.0/networks", "/compute/v2.1/servers", "/reservation/v1/leases"]

KEYSTONE_401 = {
    "error": {
        "code": 401,
        "title": "Unauthorized",
        "message": "The request you have made requires authentication.",
    }
}


def deactivate_user(membership):
    membership.user.is_active = False
    membership.user.save(update_fields=["is_active"])


def delete_project(membership):
    membership.project.delete()


def remove_role(membership):
    membership.delete()


@pytest.mark.parametrize("revoke", [deactivate_user, delete_project, remove_role])
@pytest.mark.parametrize("url", URLS)
def test_a_revoked_token_is_refused_on_the_next_request(caller, revoke, url):
    alice = caller("alpha", "member")
    assert alice.get(url).status_code == 200
    revoke(Membership.objects.get(project=alice.project, user__username="member-alpha"))
    response = alice.get(url)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    # Keystone's middleware answers before any service does: one shape for all.
    assert response.json() == KEYSTONE_401


def test_a_reactivated_user_is_let_in_again(caller):
    alice = caller("alpha", "member")
    membership = Membership.objects.get(project=alice.project)
    deactivate_user(membership)
    assert alice.get(URLS[0]).status_code == 401
    membership.user.is_active = True
    membership.user.save(update_fields=["is_active"])
    assert alice.get(URLS[0]).status_code == 200


def test_other_users_of_the_project_keep_access(caller):
    alice = caller("alpha", "member")
    bob = caller("alpha", "reader")
    deactivate_user(Membership.objects.get(project=alice.project, user__username="member-alpha"))
    assert alice.get(URLS[0]).status_code == 401
    assert bob.get(URLS[0]).status_code == 200


def test_the_checks_cost_no_extra_query(caller, rf, django_assert_num_queries):
    alice = caller("alpha", "member")
    request = rf.get(URLS[0], HTTP_X_AUTH_TOKEN=alice.token)
    # Token, expiry, membership, project and the user's state: one query.
    with django_assert_num_queries(1):
        user_id, context = KeystoneTokenAuthentication().authenticate(request)
    assert (user_id, context.project, context.role) == ("member-alpha", alice.project, "member")
