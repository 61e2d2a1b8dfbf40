"""Image files by relative path: finding, naming (unique, extension kept), matching annotations."""

from __future__ import annotations

from pathlib import Path

from ipg_keras.data.image_files import find_image_files, match_files, relative_names


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_relative_names_are_unique_and_keep_the_extension(tmp_path):
    files = [_touch(tmp_path / "imgs" / p) for p in ("cam1/1.jpg", "cam2/1.jpg", "cam3/f.jpg", "cam3/f.png")]
    _touch(tmp_path / "imgs" / "cam1" / "._1.jpg")  # macOS resource fork: not an image
    _touch(tmp_path / "imgs" / "cam1" / "notes.txt")
    upper = _touch(tmp_path / "imgs" / "cam4" / "IMG_0001.JPG")
    found, errors = find_image_files([tmp_path / "imgs"], recursive=True)
    assert found == sorted(files + [upper]) and errors == []
    upper.unlink()
    found, errors = find_image_files([tmp_path / "imgs"], recursive=True)
    assert sorted(relative_names(found, [tmp_path / "imgs"]).values()) == [
        "cam1/1.jpg", "cam2/1.jpg", "cam3/f.jpg", "cam3/f.png"]
    # Files given one by one, from two folders: named from their common folder.
    names = relative_names([files[0], files[1]], [files[0], files[1]])
    assert names == {files[0]: "cam1/1.jpg", files[1]: "cam2/1.jpg"}
    assert relative_names([files[2]], [files[2]]) == {files[2]: "f.jpg"}
    # Not recursive: the folder has no images itself, and the error says how to search deeper.
    found, errors = find_image_files([tmp_path / "imgs", tmp_path / "nothing"])
    assert found == [] and "recursive" in errors[0]["error"] and errors[1]["error"] == "no such file or folder"


def test_match_files_prefers_the_longest_relative_path(tmp_path):
    files = [tmp_path / "data" / "cam1" / "000001.jpg", tmp_path / "data" / "cam2" / "000001.jpg"]
    matched, problems = match_files(files, ["cam2/000001.jpg", "cam1/000001.jpg"])
    assert matched == {files[0]: 1, files[1]: 0} and problems == {}
    # Windows separators and absolute paths from the labelling machine.
    matched, _ = match_files(files, [r"C:\labels\cam1\000001.jpg", "/home/alice/x/cam2/000001.jpg"])
    assert matched == {files[0]: 0, files[1]: 1}


def test_bare_name_fallback_only_when_unambiguous(tmp_path):
    one = [tmp_path / "cam1" / "000001.jpg"]
    assert match_files(one, ["000001.jpg"]) == ({one[0]: 0}, {})
    two = one + [tmp_path / "cam2" / "000001.jpg"]
    matched, problems = match_files(two, ["000001.jpg"])  # which camera? refuse to guess
    assert matched == {} and sorted(problems) == sorted(two) and "ambiguous" in problems[two[0]]
    matched, problems = match_files(one, ["a/000001.jpg", "b/000001.jpg"])  # two entries for one file
    assert matched == {} and "2 annotated images" in problems[one[0]]
    # cam1's entry fits cam1 better: cam2's file is simply not annotated.
    matched, problems = match_files(two, ["cam1/000001.jpg"])
    assert matched == {two[0]: 0} and problems == {}


def test_match_files_by_stem_for_voc_xml(tmp_path):
    files = [tmp_path / "imgs" / "cam1" / "000001.jpg", tmp_path / "imgs" / "cam1" / "000002.png"]
    matched, _ = match_files(files, ["cam1/000002.xml", "cam1/000001.xml"], compare_stems=True)
    assert matched == {files[0]: 1, files[1]: 0}
    assert match_files(files, ["cam1/000001.xml"])[0] == {}  # extensions count unless compare_stems
