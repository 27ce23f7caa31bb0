"""File-system-safe names for folders and files made from user-given text (labels, run names, backbone names)."""

from __future__ import annotations

import re


def safe_file_name(text: object, *, sep: str = "-", allow_plus: bool = False) -> str:
    """``text`` with every run of characters other than ASCII letters, digits, ``_``, ``.`` and ``-`` (and ``+`` with
    ``allow_plus``) replaced by ``sep``.

    >>> safe_file_name("timm:resnet50")
    'timm-resnet50'
    >>> safe_file_name("dlib-hog+dlib68", allow_plus=True)
    'dlib-hog+dlib68'
    """
    allowed = "A-Za-z0-9_.+-" if allow_plus else "A-Za-z0-9_.-"
    return re.sub(f"[^{allowed}]+", sep, str(text))


def safe_name(text: object) -> str:
    """A file-system-safe folder name for a label or run name (no leading/trailing ``.``/``_``, at most 80
    characters, never empty).

    >>> safe_name("Cornelia de Lange / type 1")
    'Cornelia_de_Lange_type_1'
    """
    s = safe_file_name(text, sep="_").strip("._")
    return s[:80] or "unnamed"
