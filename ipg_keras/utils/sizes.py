"""Image sizes written as text (command-line flags, config values): `parse_image_size`."""

from __future__ import annotations

import argparse


class ImageSizeError(argparse.ArgumentTypeError, ValueError):
    """An image size text that is not `N` or `H,W`; argparse shows its message as the flag's error."""


def parse_image_size(text: str | None) -> tuple[int, int] | None:
    """`"512"` -> (512, 512); `"384,640"` or `"384x640"` -> (384, 640) (height, width); None -> None.

    Raises `ImageSizeError` (a ValueError and an `argparse.ArgumentTypeError`, so it
    works as an argparse `type=`) for anything else.
    """
    if text is None:
        return None
    parts = str(text).lower().replace("x", ",").split(",")
    try:
        values = [int(p) for p in parts if p.strip()]
    except ValueError:
        raise ImageSizeError(f"image size {text!r} must be N or H,W (integers)") from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) <= 0:
        raise ImageSizeError(f"image size {text!r} must be N or H,W with positive integers")
    return values[0], values[1]
