"""Issue 12, item 6: every request log line says what its texts were (the monitoring's copy rates).

In-process with the session's sample champion, packaged as register_challenger packages a version
(explanations and bundle copy from the template: no generator in the gate).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from ml.generation import bundles as b
from serving.engine import ServingModel


@pytest.fixture(scope="module")
def engine(served: Any, tmp_path_factory: pytest.TempPathFactory) -> ServingModel:
    return ServingModel(
        served.version_dir,
        tag=served.tag,
        log_dir=tmp_path_factory.mktemp("copy_logs"),
        work_dir=served.settings.work_dir,
    )


def _last_line(engine: ServingModel) -> dict[str, Any]:
    files = sorted(Path(engine.log.folder).glob("requests-*.jsonl"))
    return json.loads(files[-1].read_text().splitlines()[-1])


def test_recommend_and_bundle_lines_count_their_texts_by_status(engine: ServingModel, served: Any) -> None:
    cached = pd.read_parquet(served.version_dir / b.BUNDLES_DIR / b.EXPLANATIONS_FILE)
    packaged = {
        (str(i), str(h)): str(c)
        for i, h, c in cached[["item_id", "history_item_id", "copy"]].itertuples(index=False)
    }
    user = str(served.examples["user_id"].iloc[0])

    out = engine.recommend(user_id=user, k=5)

    copy = _last_line(engine)["copy"]
    assert copy["served"] == len(out["items"]) == 5
    assert copy["generated"] + copy["fallback"] + copy["template"] == 5
    # Each reason's status is its packaged text's (template when the pair was not packaged).
    statuses = [
        packaged.get((h["item_id"], h["reason"].rsplit("you interacted with ", 1)[1].rstrip(")")), "template")
        for h in out["items"]
    ]
    assert copy["template"] == statuses.count("template") and copy["generated"] == statuses.count("generated")

    engine.recommend(user_id="nobody-knows-me", k=3)
    assert _last_line(engine)["copy"]["served"] == 0  # cold start: a fixed phrase, no copy

    seed = next(s for s, found in engine.packaged_bundles.items() if len(found.item_ids) == 3)
    engine.bundle(item_id=seed, size=3)
    copy = _last_line(engine)["copy"]
    assert copy["served"] == 2  # the name and the description
    assert copy["template"] == 2 and copy["failures"] == {}  # the sample package has no generator
