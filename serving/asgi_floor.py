"""The bare-ASGI floor: the same ServingModel behind a plain Starlette app on uvicorn (one worker).

What a user would pick instead of BentoML, for ``bench/serving.py`` (issue 14 item 2): the same
request and response models as the Bento (``serving.service``: the same JSON schema, validated and
serialised by the same pydantic models), the same engine with the same thread settings, and the
same split between the event loop (recommend, similar: a cache lookup and a faiss search) and a
worker thread (search: an encoder pass). What it leaves out is what BentoML adds: its middleware
(OpenTelemetry tracing, Prometheus metrics, traffic control), its IO descriptors and dispatcher,
and our contract and auth middleware. The difference between the two is what BentoML costs.

Used only by the benchmark, never deployed (no auth, no /metrics, no request-size cap)::

    python -m serving.asgi_floor --model-dir <version folder> --port 3001
"""

from __future__ import annotations

import argparse
import gc
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from serving.engine import ServingError, ServingModel

ROUTES = ("recommend", "similar", "search")


def _error(status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status_code=status)


def create_app(engine: ServingModel) -> Starlette:
    """A Starlette app answering ``/recommend``, ``/similar``, ``/search`` and ``/bundle`` from ``engine``.

    Bodies are validated with the Bento's request models and answers serialised with its response
    models (pydantic, as BentoML does); a ServingError maps to its status with ``{"error": ...}``.
    """
    from serving import service

    similar_request = _similar_request_model()

    def endpoint(
        request_model: type[BaseModel],
        response_model: type[BaseModel],
        call: Callable[[Any], dict[str, Any]],
        in_thread: bool,
    ) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            try:
                body = request_model.model_validate_json(await request.body())
            except ValidationError as error:
                return _error(400, f"invalid request: {error.errors(include_url=False)}")
            try:
                answer = await run_in_threadpool(call, body) if in_thread else call(body)
            except ServingError as error:
                return _error(error.status, error.message)
            return Response(response_model(**answer).model_dump_json(), media_type="application/json")

        return handle

    routes = [
        Route(
            "/recommend",
            endpoint(
                service.RecommendRequest,
                service.RecommendResponse,
                lambda b: engine.recommend(b.user_id, b.recent_items, b.k, b.exclude_seen),
                in_thread=False,
            ),
            methods=["POST"],
        ),
        Route(
            "/similar",
            endpoint(
                similar_request,
                service.SimilarResponse,
                lambda b: engine.similar(b.item_id, b.k),
                in_thread=False,
            ),
            methods=["POST"],
        ),
        Route(
            "/search",
            endpoint(
                service.SearchRequest,
                service.SearchResponse,
                lambda b: engine.search(b.query, b.k, b.mode, b.user_id),
                in_thread=True,  # a sync API in the Bento: it runs in a worker thread there too
            ),
            methods=["POST"],
        ),
        Route(
            "/bundle",
            endpoint(
                service.BundleRequest,
                service.BundleResponse,
                lambda b: engine.bundle(b.item_id, b.user_id, b.title, b.category, b.brand, b.price, b.size),
                in_thread=True,  # a sync API in the Bento, as /search
            ),
            methods=["POST"],
        ),
        Route("/readyz", lambda _request: Response("ok"), methods=["GET"]),
    ]
    return Starlette(routes=routes)


def _similar_request_model() -> type[BaseModel]:
    """The /similar body as the Bento declares it (its API takes ``item_id`` and ``k`` arguments)."""
    from pydantic import ConfigDict

    from serving import service

    class SimilarRequest(BaseModel):
        model_config = ConfigDict(strict=True)

        item_id: service.ItemId  # type: ignore[valid-type]
        k: service.K = 10  # type: ignore[valid-type]

    return SimilarRequest


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m serving.asgi_floor",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model-dir", type=Path, required=True, help="a registered version's folder")
    parser.add_argument("--tag", default=None, help="the version's tag in the answers (default: folder name)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3001)
    parser.add_argument(
        "--log-dir", type=Path, required=True, help="request log folder (keep it out of the monitored log)"
    )
    parser.add_argument(
        "--work-dir", type=Path, default=None, help="ShopFlow work dir (user histories fallback)"
    )
    args = parser.parse_args(argv)
    if not (args.model_dir / "model").is_dir():
        parser.error(f"--model-dir {args.model_dir}: no model/ folder (not a registered version)")

    import faiss
    import torch
    import uvicorn

    from serving.service import SERVING_THREADS

    # The Bento's settings (serving.service.Recommender.__init__), so the engines cost the same.
    torch.set_num_threads(SERVING_THREADS)
    faiss.omp_set_num_threads(SERVING_THREADS)
    engine = ServingModel(
        args.model_dir,
        tag=args.tag or args.model_dir.name,
        log_dir=args.log_dir,
        work_dir=args.work_dir,
    )
    engine.warm_up()
    app = create_app(engine)
    gc.collect()
    gc.freeze()
    uvicorn.run(app, host=args.host, port=args.port, workers=1, access_log=False, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
