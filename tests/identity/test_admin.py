"""Projects and memberships in the admin go through the services the
identity API calls: the same refusals, the same rows."""

from django.contrib.auth import get_user_model

from identity.auth import user_context
from identity.models import Membership, Project, Quota, Token
from identity.services import membership_ensure, token_create
from networking import services as networking
from tests.foundation.test_admin_writes import admin_url, form_errors, form_fields, post_form


def test_a_project_added_with_a_member_and_a_quota(admin_client):
    bob = get_user_model().objects.create(username="bob")
    page = admin_client.get(admin_url(Project, "add"))
    data = form_fields(page) | {
        "name": ["lab"],
        "description": ["the lab"],
        "memberships-TOTAL_FORMS": ["1"],
        "memberships-0-user": [str(bob.pk)],
        "memberships-0-role": ["member"],
        "quotas-TOTAL_FORMS": ["1"],
        "quotas-0-resource": ["cores"],
        "quotas-0-limit": ["8"],
        "_save": ["Save"],
    }
    assert admin_client.post(admin_url(Project, "add"), data).status_code == 302
    lab = Project.objects.get(name="lab")
    assert lab.description == "the lab"
    assert list(lab.memberships.values_list("user__username", "role")) == [("bob", "member")]
    assert list(lab.quotas.values_list("resource", "limit")) == [("cores", 8)]
    # A name taken is refused on the form, and nothing is written.
    again = admin_client.post(admin_url(Project, "add"), data)
    assert form_errors(again) == ["Project with this Name already exists."]
    assert Project.objects.count() == 1 and Membership.objects.count() == 1


def test_roles_and_quotas_change_and_go_through_the_project_page(admin_client):
    membership = membership_ensure(project_name="lab", username="bob", role="reader")
    lab = membership.project
    Quota.objects.create(project=lab, resource="cores", limit=8)
    url = admin_url(Project, "change", lab.pk)
    changed = post_form(
        admin_client,
        url,
        **{"memberships-0-role": "member", "quotas-0-resource": "ram", "quotas-0-limit": "1024"},
    )
    assert changed.status_code == 302
    assert Membership.objects.get(pk=membership.pk).role == "member"
    assert list(lab.quotas.values_list("resource", "limit")) == [("ram", 1024)]
    removed = post_form(
        admin_client, url, **{"memberships-0-DELETE": "on", "quotas-0-DELETE": "on"}
    )
    assert removed.status_code == 302
    assert not lab.memberships.exists() and not lab.quotas.exists()


def test_a_project_that_owns_resources_is_not_deleted(admin_client):
    membership = membership_ensure(project_name="lab", username="bob", role="member")
    lab = membership.project
    context = user_context(user=membership.user, project=lab, role="member")
    networking.network_create(context=context, project=lab, name="kept")
    page = admin_client.post(admin_url(Project, "delete", lab.pk), {"post": "yes"}, follow=True)
    # The admin names what protects it, as the service's 409 would.
    assert "Cannot delete project" in page.content.decode() and "kept" in page.content.decode()
    assert Project.objects.filter(pk=lab.pk).exists()
    empty = Project.objects.create(name="empty")
    assert (
        admin_client.post(admin_url(Project, "delete", empty.pk), {"post": "yes"}).status_code
        == 302
    )
    assert not Project.objects.filter(pk=empty.pk).exists()


def test_a_membership_added_changed_and_removed_on_its_own_page(admin_client):
    bob = get_user_model().objects.create(username="bob")
    lab = Project.objects.create(name="lab")
    data = {"user": [str(bob.pk)], "project": [str(lab.pk)], "role": ["reader"], "_save": ["Save"]}
    assert admin_client.post(admin_url(Membership, "add"), data).status_code == 302
    membership = Membership.objects.get(user=bob, project=lab)
    url = admin_url(Membership, "change", membership.pk)
    assert post_form(admin_client, url, role="admin").status_code == 302
    assert Membership.objects.get(pk=membership.pk).role == "admin"
    deleted = admin_client.post(admin_url(Membership, "delete", membership.pk), {"post": "yes"})
    assert deleted.status_code == 302 and not Membership.objects.exists()


def test_a_token_is_read_only_and_deleting_it_revokes_it(admin_client, client):
    token, raw = token_create(project_name="lab", username="bob", role="member")
    page = admin_client.get(admin_url(Token, "change", token.pk))
    assert page.status_code == 200 and not page.context["show_save"]
    assert client.get("/networking/v2.0/networks", HTTP_X_AUTH_TOKEN=raw).status_code == 200
    deleted = admin_client.post(admin_url(Token, "delete", token.pk), {"post": "yes"})
    assert deleted.status_code == 302
    assert client.get("/networking/v2.0/networks", HTTP_X_AUTH_TOKEN=raw).status_code == 401
