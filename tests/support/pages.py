"""Reading the API's lists in tests: a page's ids, and every page by its `next` links."""

from __future__ import annotations

from urllib.parse import urlsplit


def ids(response) -> list[int]:
    """The ids of a list page (asserting it answered 200)."""
    assert response.status_code == 200, response.content
    return [user["id"] for user in response.json()["results"]]


def walk_pages(client, url: str) -> tuple[list[int], int]:
    """Every id the `next` links serve from `url`, in order, and how many pages that took."""
    seen: list[int] = []
    pages = 0
    while url:
        response = client.get(url)
        seen += ids(response)
        pages += 1
        next_url = response.json()["next"]
        url = next_url and "{0.path}?{0.query}".format(urlsplit(next_url))
    return seen, pages
