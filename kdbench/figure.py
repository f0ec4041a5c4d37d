"""``kdbench figure``: the qualitative figure of a segmentation paper, from a results folder.

Rows are evaluation images; columns are the RGB input, the X modality, the ground truth, the
teacher's prediction, the baseline's and each method's (in the order given, or the table's),
every prediction from the run's saved final weights at the label's native resolution under the
run's own evaluation protocol, in one palette (Cityscapes' colours for classes of Cityscapes'
names, matplotlib's tab20 for the others; ignored pixels black). ``errors`` adds, under each
image's row, a row of error maps: white where a prediction is wrong, black where it is right,
grey where the label is ignored.

Which images: ``ids`` (indices into the evaluation split) or, by default, the ``images``
images on which the students disagree most: the largest spread (max − min over the methods)
of per-image pixel accuracy. Which runs: of one (data set, student) column and one budget, the
seed ``seed`` (default: the smallest seed every chosen method has), and that seed's teacher.
Which weights: ``checkpoint`` "final" (``model.pt``) or "best": ``model_best.pt``, the best
periodic evaluation's, for a run whose best evaluation beat its final one by mIoU (the choice
``kdbench table --checkpoint best`` makes), else the final weights.
The output is PNG or PDF (vector axes and text, images embedded raster, as papers need).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdbench.config import RunSpec, is_teacher
from kdbench.data.base import IGNORE_INDEX, RGB_MEAN, RGB_STD
from kdbench.errors import KdbenchError
from kdbench.results.store import RunStore
from kdbench.train import checkpoint
from kdbench.train.build import build_datasets, build_model
from kdbench.train.evaluation import scores
from kdbench.train.fit import BEST_WEIGHTS

FINAL_WEIGHTS = "model.pt"
CHECKPOINTS = ("final", "best")

CITYSCAPES_COLOURS = {
    "road": (128, 64, 128), "sidewalk": (244, 35, 232), "building": (70, 70, 70),
    "wall": (102, 102, 156), "fence": (190, 153, 153), "pole": (153, 153, 153),
    "traffic light": (250, 170, 30), "traffic sign": (220, 220, 0),
    "vegetation": (107, 142, 35), "terrain": (152, 251, 152), "sky": (70, 130, 180),
    "person": (220, 20, 60), "rider": (255, 0, 0), "car": (0, 0, 142), "truck": (0, 0, 70),
    "bus": (0, 60, 100), "train": (0, 80, 100), "motorcycle": (0, 0, 230),
    "bicycle": (119, 11, 32),
}  # fmt: skip


def palette(class_names: Sequence[str]) -> np.ndarray:
    """(K + 1, 3) uint8 colours: classes 0..K-1, then black for the ignore label. A class named
    as one of Cityscapes' takes its Cityscapes colour, the others matplotlib's tab20 in turn."""
    from matplotlib import colormaps

    tab20 = [tuple(int(255 * c) for c in colormaps["tab20"](i % 20)[:3]) for i in range(400)]
    others = iter(tab20)
    colours = [CITYSCAPES_COLOURS.get(name.lower()) or next(others) for name in class_names]
    return np.array(colours + [(0, 0, 0)], dtype=np.uint8)


@dataclass
class Column:
    """One prediction column: its title and the run (record) that predicts it."""

    title: str
    record: dict[str, Any]


def choose_runs(
    records: list[dict[str, Any]], methods: Sequence[str] | None, seed: int | None
) -> list[Column]:
    """The teacher, baseline and method columns of one (data set, student) cell (docstring)."""
    done = [r for r in records if r.get("status") == "complete" and r.get("kind") != "trial"]
    students = [r for r in done if r["kind"] == "student"]
    cells = {
        (r["axes"]["dataset"], r["axes"]["student"], r["axes"].get("budget")) for r in students
    }
    if len(cells) != 1:
        raise KdbenchError(
            f"figure: the results hold {len(cells)} (data set, student, budget) cells; "
            "give --suite with one data set and student, or a folder of one cell"
        )
    wanted = (
        list(methods)
        if methods
        else sorted({r["axes"]["method"] for r in students}, key=lambda m: (m != "none", m))
    )
    by_method = {
        m: {r["axes"]["seed"]: r for r in students if r["axes"]["method"] == m} for m in wanted
    }
    missing = [m for m, runs in by_method.items() if not runs]
    if missing:
        raise KdbenchError(f"figure: no complete run of method {missing[0]!r} in the results")
    seeds = set.intersection(*(set(runs) for runs in by_method.values()))
    pick = seed if seed is not None else min(seeds, default=None)
    if pick not in seeds:
        raise KdbenchError(f"figure: seed {pick} is not complete for every method {wanted}")
    columns = [Column(m if m != "none" else "baseline", by_method[m][pick]) for m in wanted]
    teacher_id = next(
        (c.record["axes"].get("teacher") for c in columns if c.record["axes"].get("teacher")), None
    )
    teacher = next((r for r in done if r["id"] == teacher_id), None)
    return ([Column("teacher", teacher)] if teacher else []) + columns


def weights_file(store: RunStore, record: dict[str, Any], checkpoint_name: str) -> Path:
    """The weights file of ``record`` at ``checkpoint_name`` (module docstring)."""
    best = (record.get("best_val") or {}).get("miou")
    final = (record.get("metrics") or {}).get("miou")
    use_best = (
        checkpoint_name == "best" and best is not None and not (final is not None and final >= best)
    )
    return store.run_dir(record["id"]) / (BEST_WEIGHTS if use_best else FINAL_WEIGHTS)


def check_weights(store: RunStore, columns: list[Column], checkpoint_name: str) -> None:
    """A :class:`KdbenchError` naming the runs of ``columns`` whose weights file is missing."""
    missing = [weights_file(store, c.record, checkpoint_name) for c in columns]
    missing = [p for p in missing if not p.is_file()]
    if missing:
        shown = ", ".join(f"{p.parent.name}/{p.name}" for p in missing[:3])
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise KdbenchError(f"figure: no saved weights of run {shown}{more} in {store.root}")


def _load(path: Path, record: dict[str, Any], k: int, c_x: int) -> torch.nn.Module:
    spec = RunSpec.from_dict(record["config"])
    model = build_model(spec, k, c_x, weights=False)
    model.load_state_dict(checkpoint.load(path)["model"])
    return model.eval()


@torch.no_grad()
def predictions(
    path: Path, record: dict[str, Any], items: list[dict[str, Any]], k: int, c_x: int
) -> list[np.ndarray]:
    """The (H, W) label maps of ``items`` by the run's weights in ``path``, at the labels'
    native resolution, under the run's own evaluation protocol (scales and flip: :func:`scores`)."""
    model = _load(path, record, k, c_x)
    uses_x = is_teacher(record["kind"])
    protocol, cpu = record["config"]["eval"], torch.device("cpu")
    out = []
    for item in items:
        batch = {k: v[None] for k, v in item.items() if k in ("rgb", "x", "label")}
        z = scores(lambda r, q: model(r, q).logits, batch, uses_x, protocol, cpu)
        out.append(z[0].argmax(0).numpy())
    return out


def disagreement(maps: Sequence[Sequence[np.ndarray]], labels: Sequence[np.ndarray]) -> np.ndarray:
    """Per image, max − min over the runs of the pixel accuracy on its labelled pixels."""
    spread = []
    for i, label in enumerate(labels):
        valid = label != IGNORE_INDEX
        acc = [float((m[i][valid] == label[valid]).mean()) if valid.any() else 0.0 for m in maps]
        spread.append(max(acc) - min(acc))
    return np.array(spread)


def _rgb(t: torch.Tensor) -> np.ndarray:
    mean, std = np.array(RGB_MEAN), np.array(RGB_STD)
    return np.clip(t.permute(1, 2, 0).numpy() * std + mean, 0, 1)


def _x(t: torch.Tensor) -> np.ndarray:
    """Depth-like maps in grey (2nd–98th percentile), normals as (n + 1) / 2 colour."""
    a = t.numpy()
    if a.shape[0] == 3:
        return np.clip((a.transpose(1, 2, 0) + 1) / 2, 0, 1)
    lo, hi = np.percentile(a[0], [2, 98])
    return np.clip((a[0] - lo) / max(hi - lo, 1e-6), 0, 1)


def _colour(label: np.ndarray, colours: np.ndarray) -> np.ndarray:
    index = np.where(label == IGNORE_INDEX, len(colours) - 1, label)
    return colours[index]


def _errors(pred: np.ndarray, label: np.ndarray) -> np.ndarray:
    out = np.where(pred == label, 0.0, 1.0)
    return np.where(label == IGNORE_INDEX, 0.5, out)


def render(
    items: list[dict[str, Any]],
    columns: list[Column],
    maps: list[list[np.ndarray]],
    class_names: Sequence[str],
    errors: bool,
    out: Path,
) -> None:
    """Draw the grid of the module docstring to ``out`` (.png or .pdf)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = palette(class_names)
    titles = ["RGB", "X", "ground truth"] + [c.title for c in columns]
    rows = len(items) * (2 if errors else 1)
    h, w = items[0]["label"].shape[-2:]
    fig, axes = plt.subplots(
        rows, len(titles), squeeze=False, figsize=(1.6 * len(titles) * w / h, 1.6 * rows)
    )
    for i, item in enumerate(items):
        row = i * (2 if errors else 1)
        label = item["label"].numpy()
        cells = [_rgb(item["rgb"]), _x(item["x"]), _colour(label, colours)]
        cells += [_colour(m[i], colours) for m in maps]
        for j, image in enumerate(cells):
            axes[row, j].imshow(image, cmap="gray", interpolation="nearest")
        if errors:
            for j, m in enumerate(maps, start=3):
                axes[row + 1, j].imshow(
                    _errors(m[i], label), cmap="gray", vmin=0, vmax=1, interpolation="nearest"
                )
    for ax in axes.flat:
        ax.set_axis_off()
    for j, title in enumerate(titles):
        axes[0, j].set_title(title, fontsize=8)
    fig.tight_layout(pad=0.2)
    fig.savefig(out, dpi=200)
    plt.close(fig)


def make_figure(
    results: str | Path,
    out: str | Path,
    *,
    images: int = 4,
    ids: Sequence[int] | None = None,
    methods: Sequence[str] | None = None,
    seed: int | None = None,
    errors: bool = False,
    records: list[dict[str, Any]] | None = None,
    checkpoint_name: str = "final",
    among: int | None = None,
) -> list[int]:
    """Write the figure to ``out``; returns the evaluation indices shown. Without ``ids`` the
    images are chosen among the first ``among`` evaluation images (all when None)."""
    out = Path(out)
    if out.suffix not in (".png", ".pdf"):
        raise KdbenchError(f"figure --out {str(out)!r}: expected a .png or .pdf file")
    if checkpoint_name not in CHECKPOINTS:
        raise KdbenchError(f"figure --checkpoint {checkpoint_name!r}: expected final or best")
    store = RunStore(results)
    columns = choose_runs(list(store) if records is None else records, methods, seed)
    check_weights(store, columns, checkpoint_name)
    spec = RunSpec.from_dict(columns[-1].record["config"])
    evaluation = build_datasets(spec)[1]
    k, c_x = evaluation.num_classes, evaluation.x_channels
    pool = list(ids) if ids else list(range(min(len(evaluation), among or len(evaluation))))
    bad = [i for i in pool if not 0 <= i < len(evaluation)]
    if bad:
        raise KdbenchError(
            f"figure --ids: {bad[0]} is not an index of the {len(evaluation)} evaluation images"
        )
    items = [evaluation[i] for i in pool]
    maps = [
        predictions(weights_file(store, c.record, checkpoint_name), c.record, items, k, c_x)
        for c in columns
    ]
    if not ids:
        students = [m for c, m in zip(columns, maps, strict=True) if c.title != "teacher"]
        order = np.argsort(
            -disagreement(students, [it["label"].numpy() for it in items]), kind="stable"
        )[:images]
        pool, items = [pool[i] for i in order], [items[i] for i in order]
        maps = [[m[i] for i in order] for m in maps]
    out.parent.mkdir(parents=True, exist_ok=True)
    render(items, columns, maps, evaluation.class_names, errors, out)
    return pool
