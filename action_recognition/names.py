"""The project's vocabulary, in one place and light enough for DAG parsing (no torch): model families and
architecture names with their defaults, the download pool, and the rule that picks the class selector.

:data:`action_recognition.models.ARCHS` builds exactly these architectures (a test checks the two agree).
"""

from __future__ import annotations

from typing import Any

FAMILIES = ("keypoint", "rgb")
KEYPOINT_ARCHS = ("ddnet", "ddnet-2s", "stgcn", "lstm")
RGB_ARCHS = ("tsn-resnet18", "frame-resnet18", "r2plus1d-18")
ARCH_NAMES = KEYPOINT_ARCHS + RGB_ARCHS
DEFAULT_KEYPOINT_ARCH = KEYPOINT_ARCHS[0]
DEFAULT_RGB_ARCH = RGB_ARCHS[0]
#: The Airflow pool every download task shares (compose's airflow-init and `make demo` create it).
DOWNLOAD_POOL = "youtube_downloads"
#: Clips per class the plan aims for (at most), wherever a plan is made: CLI, DAG form, config.
DEFAULT_PER_CLASS = 200
CLASS_SELECTORS = ("classes", "class_contains", "all_classes")


def family_of(arch: str) -> str:
    return "keypoint" if arch in KEYPOINT_ARCHS else "rgb"


def model_name(dataset: str, family: str) -> str:
    """The registered model of a dataset's family: ``<dataset>-<family>`` (``keypoint``, ``rgb``, or
    ``video``, the model that takes a video and wraps the better family champion). The one naming rule."""
    return f"{dataset}-{family}"


def split_model_name(name: str) -> tuple[str, str]:
    """``demo-keypoint`` -> ``("demo", "keypoint")``; ``("", "")`` for a name :func:`model_name` does not
    make."""
    dataset, _, family = name.rpartition("-")
    return (dataset, family) if dataset and family in (*FAMILIES, "video") else ("", "")


def class_selector(
    classes: list[str] | None,
    class_contains: str | None,
    all_classes: bool = False,
    *,
    names_win: bool = False,
) -> dict[str, Any]:
    """The three selector fields of ``plan`` from what a person gave. ``names_win``: a non-empty ``classes``
    list overrides ``class_contains`` (the trigger form, whose ``class_contains`` has a default); otherwise
    giving more than one is left for the config to refuse, naming them."""
    names = [c.strip() for c in classes or [] if c.strip()]
    contains = (class_contains or None) if not (names_win and names) else None
    return {"classes": names, "class_contains": contains, "all_classes": bool(all_classes)}
