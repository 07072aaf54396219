"""limit/marker pagination with <collection>_links; `fields` tolerated."""

from tests.factories import NetworkFactory

NETWORKS = "/networking/v2.0/networks"


def test_limit_and_marker_walk_every_row_once(caller):
    alice = caller("alpha", "member")
    ids = sorted(str(NetworkFactory(project=alice.project).id) for _ in range(5))
    pages, url, params = [], NETWORKS, {"limit": 2}
    while len(pages) < 5:  # a link that never ends fails below, not by hanging
        body = alice.get(url, **params).json()
        pages.append([n["id"] for n in body["networks"]])
        links = body.get("networks_links")
        if not links:
            break
        assert links[0]["rel"] == "next" and links[0]["href"].startswith("http://testserver/")
        url, params = links[0]["href"].replace("http://testserver", ""), {}
    # Pages of the limit, each following its link, the last one short.
    assert pages == [ids[0:2], ids[2:4], ids[4:]]


def test_no_limit_returns_everything_without_links(caller):
    alice = caller("alpha", "member")
    NetworkFactory.create_batch(3, project=alice.project)
    body = alice.get(NETWORKS).json()
    assert len(body["networks"]) == 3 and "networks_links" not in body


def test_fields_is_tolerated_and_filters_still_apply(caller):
    alice = caller("alpha", "member")
    NetworkFactory(project=alice.project, name="a")
    NetworkFactory(project=alice.project, name="b")
    NetworkFactory(project=alice.project, name="c")
    response = alice.client.get(NETWORKS + "?fields=id&fields=name&name=a&name=c")
    assert response.status_code == 200
    assert sorted(n["name"] for n in response.json()["networks"]) == ["a", "c"]


def test_bad_limit_or_marker_is_400(caller):
    alice = caller("alpha", "member")
    assert alice.get(NETWORKS, limit="ten").status_code == 400
    assert alice.get(NETWORKS, marker="zzz").status_code == 400
