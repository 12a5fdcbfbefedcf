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
