"""Listing the files under a class folder: links followed, each real folder listed once.

Shared by training (folders.list_samples) and the data preparation (prepare/plan.class_pairs), so both see the
same images. Links are followed because data sets are often assembled from links into other trees; a link
back up its own tree (or to a folder already listed) would list the same files again and again until the
path grows too long, so such a folder is skipped and named in a warning. A folder that cannot be listed
is named too instead of silently contributing nothing.
"""
from __future__ import annotations

import os


def walk_files(top, warn=print) -> list[tuple[str, list[str]]]:
    """(folder, sorted file names) for `top` and every folder below it, sorted by folder path; `warn(line)`
    names each folder skipped (a link up the tree or to a folder already listed, or one that cannot be read)."""
    seen, found = set(), []
    real = os.path.realpath(top)
    above = {_key(p) for p in _parents(real)}  # a link to one of these would list `top` (and its siblings) again

    def unreadable(error: OSError) -> None:
        warn(f"warning: skipped {error.filename}: it cannot be listed ({error.strerror or error})")

    for root, dirs, files in os.walk(top, followlinks=True, onerror=unreadable):
        try:
            st = os.stat(root)
        except OSError as error:
            unreadable(error)
            dirs[:] = []
            continue
        if (st.st_dev, st.st_ino) in seen | above:
            what = "back up its own tree" if (st.st_dev, st.st_ino) in above else "to a folder already listed"
            warn(f"warning: skipped {root}: a link {what} ({os.path.realpath(root)}), whose files would be "
                 "listed again")
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirs.sort()  # a fixed walk order: which of two links to one folder is kept never changes
        found.append((root, sorted(files)))
    return sorted(found)


def _parents(path: str) -> list[str]:
    parents = []
    while os.path.dirname(path) != path:
        path = os.path.dirname(path)
        parents.append(path)
    return parents


def _key(path: str):
    try:
        st = os.stat(path)
    except OSError:  # a parent we may not stat cannot be reached through a link either
        return None
    return st.st_dev, st.st_ino
