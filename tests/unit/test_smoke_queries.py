"""The smoke queries' rules (``serving.bento.run_smoke``) on scripted answers: a text model must
answer /search; an ID-only model must refuse it with 501 and is asked /similar about its first
recommended item (a train DAG of ID-only challengers once failed every smoke test on /search)."""

from __future__ import annotations

from typing import Any

import pytest

from serving.bento import run_smoke

ITEMS = {"items": [{"item_id": "B1", "score": 0.5}], "model_version": "m:1"}


def _server(search_status: int) -> tuple[list[tuple[str, dict[str, Any]]], Any]:
    asked: list[tuple[str, dict[str, Any]]] = []

    def post(path: str, payload: dict[str, Any]) -> tuple[int, Any]:
        asked.append((path, payload))
        if path == "/search" and search_status != 200:
            return search_status, {"error": "search is unavailable"}
        return 200, ITEMS

    return asked, post


def test_a_text_model_is_searched_then_asked_for_similar_items() -> None:
    asked, post = _server(200)
    result = run_smoke(post)
    assert [p for p, _ in asked] == ["/recommend", "/search", "/similar"]
    assert asked[-1][1]["item_id"] == "B1" and result["model_version"] == "m:1"


def test_an_id_only_model_must_refuse_search_and_still_answer_similar() -> None:
    asked, post = _server(501)
    result = run_smoke(post, searchable=False)
    assert [p for p, _ in asked] == ["/recommend", "/search", "/similar"]
    assert result["endpoints"]["search"]["status"] == 501 and result["model_version"] == "m:1"


@pytest.mark.parametrize(("searchable", "status"), [(True, 501), (False, 200), (False, 500)])
def test_a_search_answer_against_the_model_kind_fails(searchable: bool, status: int) -> None:
    _, post = _server(status)
    with pytest.raises(RuntimeError, match="/search"):
        run_smoke(post, searchable=searchable)
