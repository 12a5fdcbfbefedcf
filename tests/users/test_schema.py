"""The OpenAPI schema and its Swagger UI."""

from __future__ import annotations

import re

import pytest
import yaml
from django.core.management import call_command

pytestmark = pytest.mark.django_db


def test_schema_validates_without_warnings(tmp_path):
    out = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    schema = yaml.safe_load(out.read_text())
    paths = schema["paths"]
    assert set(paths["/users"]) == {"get", "post"}
    assert set(paths["/users/{id}"]) == {"get", "delete"}
    listing = paths["/users"]["get"]
    parameters = {parameter["name"] for parameter in listing["parameters"]}
    assert parameters >= {
        "name", "email", "first_name", "last_name", "email_address", "created_after",
        "created_before", "deleted", "merged", "parent_user_id", "ordering", "cursor",
        "page_size",
    }  # fmt: skip
    page = listing["responses"]["200"]["content"]["application/json"]["schema"]
    if "$ref" in page:
        page = schema["components"]["schemas"][page["$ref"].rsplit("/", 1)[1]]
    assert set(page["properties"]) == {"next", "previous", "results"}
    assert page["properties"]["results"]["items"] == {"$ref": "#/components/schemas/User"}
    assert {"400", "429"} <= set(listing["responses"])
    assert {"201", "400", "401"} <= set(paths["/users"]["post"]["responses"])
    assert {"200", "404"} <= set(paths["/users/{id}"]["get"]["responses"])
    assert {"204", "401", "404"} <= set(paths["/users/{id}"]["delete"]["responses"])
    assert "tokenAuth" in schema["components"]["securitySchemes"]


# What each operation can answer (docs/api.md, "Errors"): the views' own statuses, and
# 400 (a bad Host), 413, 431 and 500 from around them.
AROUND = {"400", "413", "431", "500"}
DOCUMENTED = {
    # 503: the read ran past API_QUERY_TIMEOUT_MS (users.selectors.bounded_read).
    ("/users", "get"): {"200", "401", "403", "406", "429", "503"} | AROUND,
    ("/users", "post"): {"201", "401", "403", "406", "415", "429"} | AROUND,
    ("/users/{id}", "get"): {"200", "401", "403", "404", "406", "429"} | AROUND,
    ("/users/{id}", "delete"): {"204", "401", "403", "404", "406", "429"} | AROUND,
    ("/users/sse", "get"): {"200", "401", "403", "429", "503"} | AROUND,
}


@pytest.mark.parametrize(("path", "method"), list(DOCUMENTED))
def test_every_status_an_operation_can_answer_is_documented(openapi, path, method):
    responses = openapi["paths"][path][method]["responses"]
    assert set(responses) == DOCUMENTED[path, method]
    for status, response in responses.items():
        if status.startswith(("4", "5")):  # one JSON shape per status
            schema = response["content"]["application/json"]["schema"]
            if status == "400":
                assert schema["additionalProperties"] == {
                    "type": "array",
                    "items": {"type": "string"},
                }
            else:
                assert schema == {"$ref": "#/components/schemas/Error"}


def test_event_stream_is_documented(openapi):
    stream = openapi["paths"]["/users/sse"]["get"]
    ok = stream["responses"]["200"]
    assert set(ok["content"]) == {"text/event-stream"}
    assert set(ok["x-events"]) == {
        "stream-open", "user.created", "user.updated", "user.deleted", "users.ingested",
        "stream-reset", "stream-error",
    }  # fmt: skip
    assert {p["name"] for p in stream["parameters"]} == {"Last-Event-ID", "lastEventId"}
    schemas = openapi["components"]["schemas"]
    assert schemas["UserDeletedEvent"]["required"] == ["id"]
    assert set(schemas["UsersIngestedEvent"]["properties"]) == {"run", "batch", "count", "users"}
    for event in ("user.created", "user.deleted", "users.ingested", "stream-reset"):
        assert f"`{event}`" in stream["description"]


@pytest.mark.django_db(transaction=True)  # the view closes its database connection
def test_event_stream_refusals_have_the_documented_bodies(openapi, anon_client, reader_client):
    import jsonschema

    responses = openapi["paths"]["/users/sse"]["get"]["responses"]
    refusals = [
        anon_client.get("/users/sse"),
        reader_client.get("/users/sse", HTTP_LAST_EVENT_ID="nonsense"),
    ]
    assert [response.status_code for response in refusals] == [401, 400]
    for response in refusals:
        schema = responses[str(response.status_code)]["content"]["application/json"]["schema"]
        jsonschema.validate(response.json(), {**schema, "components": openapi["components"]})


def test_user_body_carries_the_shared_field_rules(openapi):
    fields = openapi["components"]["schemas"]["User"]["properties"]
    assert fields["first_name"]["maxLength"] == fields["last_name"]["maxLength"] == 255
    assert fields["email_address"] == {
        **fields["email_address"],
        "format": "email",
        "maxLength": 254,
    }


def test_schema_and_docs_are_served(client, plain_static_storage):
    assert client.get("/api/schema/").status_code == 200
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    assert b"swagger-ui" in docs.content
    # Sidecar assets: every script and stylesheet is served by us, so the page works offline.
    # (The page also embeds a random CSRF token, so a search of the whole text is not a test.)
    urls = re.findall(r'(?:src|href)="([^"]*)"', docs.content.decode())
    assert any(url.endswith("swagger-ui-bundle.js") for url in urls), urls
    assert all(url.startswith("/static/") for url in urls), urls
