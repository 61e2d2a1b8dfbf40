"""Image files on disk: finding them (`find_image_files`), naming them by relative path
(`relative_names`) and matching them to the file names an annotation file lists
(`match_files`).

Camera traps, multi-camera rigs and video frame dumps reuse file names in
different folders (`cam1/000001.jpg`, `cam2/000001.jpg`), and one folder may hold
`frame.jpg` and `frame.png`. A file is therefore known by its path relative to
the folder it was found in, extension included, never by its bare name.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Sequence

#: Extensions `find_image_files` lists in folders (any case); `read_image` reads more.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")


def find_image_files(inputs: Sequence[str | os.PathLike], recursive: bool = False) -> tuple[list[Path], list[dict]]:
    """Image files from files and folders, sorted by path, each once.

    Args:
        inputs: image files (taken whatever their extension) and folders (their
            files with an `IMAGE_EXTENSIONS` extension, any case, in subfolders too
            when `recursive`; hidden files such as macOS `._x.jpg` are left out).

    Returns:
        `(files, errors)`: `errors` lists `{"file", "error"}` for inputs that do not
        exist and folders without image files; the other inputs are still listed.
    """
    files: list[Path] = []
    errors: list[dict] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            found = [p for p in path.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                     and not p.name.startswith(".")]  # macOS "._x.jpg" resource forks, hidden files
            if not found:
                errors.append({"file": str(path), "error": "folder holds no image files "
                               f"({', '.join(IMAGE_EXTENSIONS)})" + ("" if recursive else "; pass --recursive "
                                                                     "(recursive=True) to search subfolders")})
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            errors.append({"file": str(path), "error": "no such file or folder"})
    unique = sorted(set(files), key=lambda p: str(p))
    return unique, errors


def relative_names(files: Sequence[str | os.PathLike], inputs: Sequence[str | os.PathLike] = ()) -> dict[Path, str]:
    """Each file's name relative to the deepest folder holding all inputs: unique, extension kept.

    Args:
        files: the image files (e.g. from `find_image_files`).
        inputs: the files and folders they were found from; the root is the common
            folder of the folder inputs and of the parents of the other files.

    Returns:
        `{file: "cam1/000001.jpg"}`, POSIX separators. Two different files never get
        the same name: `imgs/cam1/000001.jpg` and `imgs/cam2/000001.jpg` found from
        `imgs` are `cam1/000001.jpg` and `cam2/000001.jpg`; a single file is its name.
    """
    files = [Path(f) for f in files]
    if not files:
        return {}
    roots = [os.path.abspath(p) if Path(p).is_dir() else os.path.dirname(os.path.abspath(p)) for p in inputs]
    roots += [os.path.dirname(os.path.abspath(f)) for f in files]
    root = os.path.commonpath(roots)
    return {f: PurePosixPath(*Path(os.path.relpath(os.path.abspath(f), root)).parts).as_posix() for f in files}


def _parts(name: str) -> tuple[str, ...]:
    """Path components of a file name as written in an annotation file (`/` or `\\`, `./`, drive dropped)."""
    return tuple(p for p in str(name).replace("\\", "/").split("/") if p not in ("", ".") and not p.endswith(":"))


def _stem_parts(parts: tuple[str, ...]) -> tuple[str, ...]:
    return parts[:-1] + (PurePosixPath(parts[-1]).stem,) if parts else parts


def _common_tail(a: tuple[str, ...], b: tuple[str, ...]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[-1 - n] == b[-1 - n]:
        n += 1
    return n


def match_annotated_files(
    files: Sequence[str | os.PathLike], keys: Sequence[tuple[int, str, bool]]
) -> tuple[dict[Path, int], dict[Path, str]]:
    """Match image files to annotation items by relative path (the rule of every annotation consumer).

    A file and a key match by how many trailing path components they share (the
    name alone counts 1, `cam1/000001.jpg` counts 2, ...): each file takes the
    item that shares the most, and that item takes the file that shares the most
    with it. So `cam1/000001.jpg` goes to `imgs/cam1/000001.jpg`, never to
    `imgs/cam2/000001.jpg`, and a bare name (`000001.jpg`) matches only when one
    file and one item have it: the bare-name fallback is taken only when
    unambiguous. A file that fits an item less well than another file does is
    simply not annotated.

    Args:
        files: image file paths.
        keys: `(item, name, exact)`: `name` as the annotation writes it (COCO
            `file_name`, VOC `<filename>` or XML path; relative or absolute, `/`
            or `\\`); `exact` names carry the image's extension; the others are
            compared without their own extension and the image's (a VOC XML is
            named like its image: `cam1/000001.xml` ~ `cam1/000001.jpg`). Exact keys
            beat stem keys at equal length; one item may have several keys.

    Returns:
        `(matched, problems)`: `{file: item}` and, for files left unmatched
        because the choice is ambiguous, `{file: reason}`.
    """
    files = [Path(f) for f in files]
    by_last: dict[str, list[tuple[int, tuple[str, ...], bool]]] = {}
    for item, name, exact in keys:
        parts = _parts(name) if exact else _stem_parts(_parts(name))
        if parts:
            by_last.setdefault(parts[-1], []).append((item, parts, exact))
    problems: dict[Path, str] = {}
    choice: dict[Path, tuple[int, tuple[int, bool]]] = {}
    for f in files:
        parts = _parts(Path(os.path.abspath(f)).as_posix())
        stem_parts = _stem_parts(parts)
        scored: dict[int, tuple[int, bool]] = {}
        for item, kparts, exact in by_last.get(parts[-1], []) + by_last.get(stem_parts[-1], []):
            n = _common_tail(parts if exact else _stem_parts(parts), kparts)
            if n:
                scored[item] = max(scored.get(item, (n, exact)), (n, exact))
        if not scored:
            continue
        best = max(scored.values())
        items = [i for i, score in scored.items() if score == best]
        if len(items) > 1:
            problems[f] = (f"ambiguous: {len(items)} annotated images fit {f} equally well; give the file's "
                           "folder in the annotation, or pass the folder its file names are relative to")
            continue
        choice[f] = (items[0], best)
    by_item: dict[int, list[Path]] = {}
    for f, (item, _) in choice.items():
        by_item.setdefault(item, []).append(f)
    matched: dict[Path, int] = {}
    for item, fs in by_item.items():
        best = max(choice[f][1] for f in fs)
        winners = [f for f in fs if choice[f][1] == best]
        if len(winners) > 1:
            for f in winners:
                problems[f] = (f"ambiguous: {len(winners)} files fit the same annotation equally well "
                               f"({', '.join(str(w) for w in winners[:3])}); give the annotations' file names "
                               "with their folders")
            continue
        matched[winners[0]] = item
    return matched, problems


def match_files(
    files: Sequence[str | os.PathLike], names: Sequence[str], *, compare_stems: bool = False
) -> tuple[dict[Path, int], dict[Path, str]]:
    """`match_annotated_files` for one name per item: `{file: index into names}`, `{file: reason}`.

    compare_stems: compare the last component without its extension (VOC XML
    files are named like their images: `cam1/000001.xml` ~ `cam1/000001.jpg`).
    """
    return match_annotated_files(files, [(j, n, not compare_stems) for j, n in enumerate(names)])
