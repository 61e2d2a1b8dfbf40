"""Class names: how a model's classes are matched to the names in annotation files.

One rule for every format (Pascal VOC object names, COCO category names) and
every consumer (loaders, `load_ground_truth` for scoring): names match when
they are equal after removing surrounding whitespace and ignoring case
("Car ", "car" and "CAR" are one class). A model's classes are matched to
annotation names by name, never by position, whenever both sides have names.
"""

from __future__ import annotations

from typing import Sequence

from ipg_keras.data.report import DataError


def class_key(name: object) -> str:
    """Matching key of a class name: surrounding whitespace removed, case folded."""
    return str(name).strip().casefold()


def check_class_names(class_names: Sequence[str]) -> list[str]:
    """`class_names` as a list of str; raises `ValueError` on names that match each other."""
    names = [str(n) for n in class_names]
    seen: dict[str, str] = {}
    for n in names:
        key = class_key(n)
        if not key:
            raise ValueError(f"class_names has an empty name: {names}")
        if key in seen:
            raise ValueError(f"class_names has duplicates: {seen[key]!r} and {n!r} (names match ignoring case "
                             f"and surrounding spaces) in {names}")
        seen[key] = n
    return names


def match_names(class_names: Sequence[str], available: Sequence[str], *, source: str, what: str) -> list[int]:
    """Position in `available` of each of `class_names`, matched with `class_key`.

    Args:
        class_names: the model's classes, in class-id order.
        available: the names an annotation file defines (e.g. COCO categories).
        source: the file, for messages; what: what `available` are ("categories").

    Raises:
        DataError listing both lists when a class has no match, or when it
        matches several entries of `available`.
    """
    index: dict[str, list[int]] = {}
    for i, name in enumerate(available):
        index.setdefault(class_key(name), []).append(i)
    missing = [n for n in class_names if class_key(n) not in index]
    if missing:
        raise DataError(
            f"{source}: class name(s) {missing} are not among the {what} {list(available)}; the model's classes "
            f"are {list(class_names)}. Classes are matched to {what} by name (case and surrounding spaces "
            "ignored): pass the class names the model was trained with (--class-names / class_names) or an "
            "annotation file with those names."
        )
    ambiguous = {n: [available[i] for i in index[class_key(n)]] for n in class_names if len(index[class_key(n)]) > 1}
    if ambiguous:
        raise DataError(f"{source}: class name(s) match several {what}: {ambiguous}; rename them so that each "
                        f"class matches exactly one of {list(available)}")
    return [index[class_key(n)][0] for n in class_names]
