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


def _parts(name: str, stem: bool) -> tuple[str, ...]:
    """Path components of a file name as written in an annotation file (`/` or `\\`, `./` dropped)."""
    parts = tuple(p for p in str(name).replace("\\", "/").split("/") if p not in ("", "."))
    if stem and parts:
        parts = parts[:-1] + (PurePosixPath(parts[-1]).stem,)
    return parts


def _common_tail(a: tuple[str, ...], b: tuple[str, ...]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[-1 - n] == b[-1 - n]:
        n += 1
    return n


def match_files(
    files: Sequence[str | os.PathLike], names: Sequence[str], *, compare_stems: bool = False
) -> tuple[dict[Path, int], dict[Path, str]]:
    """Match image files to the file names an annotation file lists, by relative path.

    A file and a name match by how many trailing path components they share (the
    name alone counts 1, `cam1/000001.jpg` counts 2, ...): each file takes the name
    that shares the most, and that name must share fewer with every other file. So
    `cam1/000001.jpg` goes to `imgs/cam1/000001.jpg`, never to `imgs/cam2/000001.jpg`,
    and a bare name (`000001.jpg`) matches only when one file and one listed name
    have it: the fallback to the bare name is taken only when unambiguous.

    Args:
        files: image file paths.
        names: file names from the annotations (COCO `file_name`, VOC XML paths),
            relative or absolute, `/` or `\\` separated.
        compare_stems: compare the last component without its extension (VOC XML
            files are named like their images: `cam1/000001.xml` ~ `cam1/000001.jpg`).

    Returns:
        `(matched, problems)`: `{file: index into names}` and, for files left
        unmatched because the choice is ambiguous, `{file: reason}`. Files that
        share no name at all are in neither.
    """
    files = [Path(f) for f in files]
    name_parts = [_parts(n, compare_stems) for n in names]
    by_last: dict[str, list[int]] = {}
    for j, parts in enumerate(name_parts):
        if parts:
            by_last.setdefault(parts[-1], []).append(j)
    file_parts = [_parts(Path(os.path.abspath(f)).as_posix(), compare_stems) for f in files]
    scores: dict[int, dict[int, int]] = {}  # file index -> {name index: shared components}
    for i, parts in enumerate(file_parts):
        for j in by_last.get(parts[-1], []):
            scores.setdefault(i, {})[j] = _common_tail(parts, name_parts[j])
    best_of_name: dict[int, list[tuple[int, int]]] = {}
    for i, row in scores.items():
        for j, score in row.items():
            best_of_name.setdefault(j, []).append((score, i))
    matched: dict[Path, int] = {}
    problems: dict[Path, str] = {}
    for i, row in scores.items():
        top = max(row.values())
        candidates = [j for j, s in row.items() if s == top]
        if len(candidates) > 1:
            problems[files[i]] = (f"ambiguous: {len(candidates)} annotated images are named "
                                  f"{', '.join(repr(names[j]) for j in candidates[:3])}; pass the folder the "
                                  "annotation's file names are relative to")
            continue
        j = candidates[0]
        if any(s > top for s, _ in best_of_name[j]):
            continue  # another file fits this name better: this one has no annotation
        rivals = [k for s, k in best_of_name[j] if s == top and k != i]
        if rivals:
            problems[files[i]] = (f"ambiguous: annotation {names[j]!r} fits {files[i]} and "
                                  f"{', '.join(str(files[k]) for k in rivals[:3])} equally; name the images "
                                  "in the annotations by their relative path (e.g. cam1/000001.jpg)")
            continue
        matched[files[i]] = j
    return matched, problems
