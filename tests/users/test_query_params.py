"""Unknown query parameters are refused with a 400 naming them (users.api.query_params), on
every users operation, and the OpenAPI schema declares exactly the parameters accepted."""

from __future__ import annotations

import pytest

from users.api.views import UserViewSet
from users.models import User
from users.selectors import user_filter_email_address

pytestmark = pytest.mark.django_db

LIST_PARAMS = (
    "created_after, created_before, cursor, deleted, email, email_address, first_name, format, "
    "last_name, merged, name, ordering, page_size, parent_user_id"
)
NEW_USER = {"first_name": "Ada", "last_name": "Lovelace", "email_address": "ada@example.com"}


def test_a_misspelt_filter_is_400_naming_it_and_the_accepted_ones(reader_client, user_factory):
    user_factory(first_name="Ann")
    user_factory(first_name="Bob")

    response = reader_client.get("/users?frist_name=Ann")

    assert response.status_code == 400
    assert response.json() == {"frist_name": [f"Unknown query parameter. Accepted: {LIST_PARAMS}."]}


def test_every_known_parameter_is_accepted_even_empty(reader_client, user_factory):
    # What the browsable API's Filters form sends: every box, most of them empty.
    user = user_factory(first_name="Ann")
    names = [name.strip() for name in LIST_PARAMS.split(",")]
    query = "&".join(f"{name}=" for name in names if name != "format")
    response = reader_client.get(f"/users?{query}&format=json")
    assert response.status_code == 200, response.content
    assert [row["id"] for row in response.json()["results"]] == [user.id]


def test_only_the_unknown_parameters_are_named_and_at_most_ten(reader_client):
    response = reader_client.get("/users?name=a&pagesize=5&sort=id")
    assert response.status_code == 400
    assert set(response.json()) == {"pagesize", "sort"}

    many = "&".join(f"p{n}=1" for n in range(50))
    assert len(reader_client.get(f"/users?{many}").json()) == 10


def test_one_user_takes_no_query_parameter_but_format(reader_client, user_factory):
    user = user_factory()
    accepted = {"fields": ["Unknown query parameter. Accepted: format."]}
    # With a query string the request leaves the fast read path for DRF, which refuses it.
    response = reader_client.get(f"/users/{user.id}?fields=id")
    assert (response.status_code, response.json()) == (400, accepted)
    assert reader_client.get(f"/users/{user.id}?format=json").status_code == 200


def test_writes_with_an_unknown_parameter_change_nothing(writer_client, user_factory):
    user = user_factory()

    deleted = writer_client.delete(f"/users/{user.id}?force=true")
    created = writer_client.post("/users?dry_run=1", NEW_USER, format="json")

    assert (deleted.status_code, created.status_code) == (400, 400)
    assert set(deleted.json()) == {"force"} and set(created.json()) == {"dry_run"}
    assert User.objects.filter(id=user.id).exists()
    assert not user_filter_email_address(
        queryset=User.objects.all(), address="ada@example.com"
    ).exists()


def test_a_create_posted_from_a_filtered_page_of_the_browsable_api_is_accepted(writer_client):
    # The browsable API posts its form to the address of the page it shows.
    response = writer_client.post("/users?name=ann&ordering=-id&format=json", NEW_USER)
    assert response.status_code == 201, response.content


def test_an_anonymous_client_is_told_to_authenticate_first(anon_client):
    response = anon_client.get("/users?frist_name=Ann")
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("path", "method", "action"),
    [
        ("/users", "get", "list"),
        ("/users", "post", "create"),
        ("/users/{id}", "get", "retrieve"),
        ("/users/{id}", "delete", "destroy"),
    ],
)
def test_the_schema_declares_exactly_the_accepted_parameters(openapi, path, method, action):
    operation = openapi["paths"][path][method]
    declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "query"}
    kwargs = {"pk": "1"} if "{id}" in path else {}
    view = UserViewSet(action=action, format_kwarg=None, kwargs=kwargs)
    accepted = set(view.accepted_query_params())
    # `format` (DRF's, for the browsable API) is accepted but not part of the JSON API; a POST
    # accepts the list's parameters (and ignores them) for the browsable API's form.
    if action == "create":
        list_view = UserViewSet(action="list", format_kwarg=None, kwargs={})
        assert declared == set() and accepted == set(list_view.accepted_query_params())
    else:
        assert declared == accepted - {"format"}
    assert "400" in operation["responses"]
