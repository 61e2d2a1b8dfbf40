"""What a loader skipped, fixed or dropped, and why: `LoadReport` and `DataError`.

Every loader in `ipg_keras.data` sends each problem it meets through a
`LoadReport`: the problem is logged at once (`logging.warning`, naming the file),
counted by reason, and summarised at the end of loading. With `strict=True` the
first problem raises `DataError` instead, so nothing is ever dropped silently.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter

logger = logging.getLogger("ipg_keras.data")

# reason -> (what happened, unit counted). Image-level reasons skip the whole image.
REASONS: dict[str, tuple[str, str]] = {
    "missing_image": ("image file missing, image skipped", "images"),
    "corrupt_image": ("image file corrupt or unreadable, image skipped", "images"),
    "empty_annotation": ("annotation file empty, image skipped", "files"),
    "bad_annotation": ("annotation file unparseable, image skipped", "files"),
    "image_id_without_file": ("COCO image id with no image file, image skipped", "images"),
    "annotation_without_image": ("COCO annotation for an unknown image id, dropped", "boxes"),
    "box_clipped": ("box partly outside the image, clipped to it", "boxes"),
    "box_outside": ("box mostly outside the image (less than min_visible inside), dropped", "boxes"),
    "normalized_box": ("box coordinates within [0, 1] on an image of 32 px or more (normalized, "
                       "not pixels), dropped", "boxes"),
    "degenerate_box": ("degenerate box (zero or negative size), dropped", "boxes"),
    "invalid_box": ("box with missing or non-numeric coordinates, dropped", "boxes"),
    "unknown_class": ("unknown class name or category id, box dropped", "boxes"),
    "size_mismatch": ("annotated image size differs from the file, file size used", "images"),
}

IMAGE_SKIP_REASONS = frozenset(
    {"missing_image", "corrupt_image", "empty_annotation", "bad_annotation", "image_id_without_file"}
)


class DataError(ValueError):
    """Bad input data met by a loader running with `strict=True` (or data it cannot load at all)."""


@dataclasses.dataclass
class Issue:
    """One problem: `reason` (a key of `REASONS`), the `file` it concerns, a readable
    `message`, and how many items (boxes, images) it covers."""

    reason: str
    file: str
    message: str
    count: int = 1


class LoadReport:
    """Counts and messages of everything a loader skipped, clipped or dropped.

    Attributes:
        source: what was loaded (folder, annotation file, dataset name).
        strict: raise `DataError` on the first issue instead of recording it.
        issues: every `Issue`, in the order met.
        images_loaded / boxes_loaded: what made it into the dataset.
    """

    def __init__(self, source: str, strict: bool = False):
        self.source = str(source)
        self.strict = strict
        self.issues: list[Issue] = []
        self.images_loaded = 0
        self.boxes_loaded = 0
        # Counters that are filled while a tf.data pipeline runs (e.g. degenerate
        # boxes dropped in-graph by `from_tfds`): name -> tf.Variable.
        self._live: dict[str, object] = {}

    def add(self, reason: str, file: str, message: str, count: int = 1) -> None:
        """Record (and log) one issue; raises `DataError` when `strict`."""
        if reason not in REASONS:
            raise KeyError(f"unknown report reason {reason!r}; known: {sorted(REASONS)}")
        text = f"{file}: {message}"
        if self.strict:
            raise DataError(f"{text} (strict=True; pass strict=False to skip and count instead)")
        self.issues.append(Issue(reason, str(file), message, int(count)))
        logger.warning("%s", text)

    def add_live_counter(self, reason: str, variable) -> None:
        """Attach a `tf.Variable` counting `reason` items while the pipeline runs."""
        self._live[reason] = variable

    @property
    def counts(self) -> dict[str, int]:
        """reason -> number of items (images or boxes, see `REASONS`) affected."""
        c: Counter = Counter()
        for issue in self.issues:
            c[issue.reason] += issue.count
        for reason, var in self._live.items():
            value = int(var.numpy())
            if value:
                c[reason] += value
        return dict(c)

    @property
    def images_skipped(self) -> int:
        """Images left out of the dataset (missing/corrupt files, bad annotations)."""
        return sum(n for r, n in self.counts.items() if r in IMAGE_SKIP_REASONS)

    @property
    def files(self) -> dict[str, list[str]]:
        """reason -> files concerned (each listed once)."""
        out: dict[str, list[str]] = {}
        for issue in self.issues:
            files = out.setdefault(issue.reason, [])
            if issue.file not in files:
                files.append(issue.file)
        return out

    def __bool__(self) -> bool:  # "was anything wrong?"
        return bool(self.counts)

    def summary(self) -> str:
        """Multi-line text: what was loaded, then one line per reason with its count."""
        lines = [
            f"Loaded {self.images_loaded} images with {self.boxes_loaded} boxes from {self.source}."
        ]
        counts = self.counts
        if not counts:
            lines.append("No problems found.")
        for reason in REASONS:
            if reason in counts:
                what, unit = REASONS[reason]
                nfiles = len(self.files.get(reason, []))
                where = f" in {nfiles} file(s)" if nfiles else ""
                lines.append(f"  {reason}: {counts[reason]} {unit}{where} - {what}")
        return "\n".join(lines)

    def log(self) -> None:
        """Log the summary (warning level when something was skipped, info otherwise)."""
        level = logging.WARNING if self.counts else logging.INFO
        logger.log(level, "%s", self.summary())

    def __str__(self) -> str:
        return self.summary()

    def __repr__(self) -> str:
        return f"LoadReport(source={self.source!r}, counts={self.counts})"
