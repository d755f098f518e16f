"""The review app's keys: the fixed ones, and the keys that assign classes.

The front end reads both from ``GET /api/session``; the README lists :data:`KEYS`.
"""

from __future__ import annotations

__all__ = ["KEYS", "RESERVED", "class_keys"]

#: (keys, what they do), in the order the help shows them
KEYS: list[tuple[str, str]] = [
    ("1-9 0, letters", "assign the class shown beside the key"),
    ("a", "accept the current label"),
    ("x", "exclude (again: include)"),
    ("m", "multi-label: then the class keys, Enter to save, Esc to cancel"),
    ("s", "select this image as the original"),
    ("d", "mark a duplicate of the selected image (in a duplicate set: of its first image)"),
    ("u", "undo this tab's last decision"),
    ("→ ↓ j space", "next image (↓: next row in the grid)"),
    ("← ↑ k shift+space", "previous image (↑: previous row)"),
    ("Enter f", "focus view: large image, predictions, neighbours, lineage, boxes"),
    ("b shift+b", "focus view: select the next / previous detection box (or click it)"),
    ("1-9 0 (box selected)", "relabel the selected box as the box category beside the key"),
    ("/ (box selected)", "type a box category (a new one too), Enter to relabel the box"),
    ("Delete Backspace", "delete the selected box"),
    ("Esc", "deselect the box; back to the grid; cancel"),
    ("y n", "cleaning plan or suspicious tags queue: apply / reject the item"),
    ("/", "type a label (a new class too), Enter to assign"),
    ("?", "show these keys"),
]

#: letters with an action of their own, never given to a class
RESERVED = set("abdfjkmnsuxy")
_FREE = [*"1234567890", *(c for c in "ceghilopqrtvwz" if c not in RESERVED)]


def class_keys(classes: list[str]) -> dict[str, str]:
    """A key per class, as far as keys go: a class named by one free digit or letter gets
    that key (digits ``0``-``9`` keep their own), the others the free keys in order
    (``1``-``9``, ``0``, then letters that have no action). Classes beyond are assigned
    by mouse or by typing the label (``/``)."""
    keys: dict[str, str] = {}
    used: set[str] = set()
    for name in classes:
        if len(name) == 1 and name.lower() in _FREE and name.lower() not in used:
            keys[name] = name.lower()
            used.add(name.lower())
    free = (k for k in _FREE if k not in used)
    for name in classes:
        if name not in keys:
            key = next(free, None)
            if key is None:
                break
            keys[name] = key
    return keys
