"""When ComfyUI may start, in one place: the entrypoint's gate, the service's summary and /healthz ask this module.

The rule: every `required` model of the selected presets (MODEL_PRESETS) and every download marked required in
the DB (what the user started) is verified in place, that is its row is done AND its file is at its dest under
the models dir. `missing()` returns what is not, so one call answers both "ready?" (an empty list) and the
placeholder page's rows.

The entrypoint must stay light until JupyterLab has started, so importing this module loads neither SQLAlchemy
nor pydantic (the state module is imported when `missing()` first runs, once the DB is open anyway).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .manifest import Catalog

# The state shown for a required preset model that has no row yet.
NOT_QUEUED = "not queued yet"
# A model that keeps ComfyUI waiting: {id, state, size, bytes_done, error} (what the placeholder page renders).
Missing = list[dict[str, Any]]


def preset_requirements(catalog: Catalog, presets: Iterable[str]) -> list[tuple[str, str | None]]:
    """(model id, dest) of every required model of the given presets, in manifest order (dest None: a CivitAI file
    the manifest lets CivitAI name; its download's dest counts). A preset the catalog does not know is ignored
    here: whoever reads MODEL_PRESETS reports it."""
    known = [p for p in presets if p in catalog.presets]
    if not known:  # select() with no preset means every model: not what "no preset" asks for
        return []
    return [(spec.id, spec.dest) for spec in catalog.select(known, ()) if spec.required]


def missing(required: Sequence[tuple[str, str | None]], rows: Iterable[Mapping[str, Any]], models_dir: Path) -> Missing:
    """Every required preset model (`required`, from `preset_requirements`) and every row marked required that
    is not done with its file in place, presets' models first. `rows` are download rows as plain mappings
    (`Store.rows()`). An empty list means ComfyUI is ready."""
    from .state import DownloadState, bytes_done  # lazily: see the module docstring

    by_id = {r["id"]: r for r in rows}
    wanted = dict(required)  # id -> the dest ComfyUI looks for
    wanted.update((i, r["dest"]) for i, r in by_id.items() if r["required"] and i not in wanted)
    out: Missing = []
    for model_id, dest in wanted.items():
        row = by_id.get(model_id)
        if row is None:
            out.append({"id": model_id, "state": NOT_QUEUED, "size": None, "bytes_done": 0, "error": None})
        elif row["state"] != DownloadState.DONE.value or not (models_dir / (dest or row["dest"])).is_file():
            out.append({"id": model_id, "state": row["state"], "size": row["size"],
                        "bytes_done": bytes_done(row["state"], row["size"], row["bytes_done"]), "error": row["error"]})
    return out
