"""Listing a split's class folders and the files under them: links followed, each real folder listed once.

Shared by training (folders.list_samples) and the data preparation (prepare/plan.py), so both see the same
classes and images. Dot-named (hidden) folders such as Jupyter's .ipynb_checkpoints are not classes: as
class 0 they would shift every label. Links are followed because data sets are often assembled from links
into other trees; a link back up its own tree (or to a folder its class already listed) would list the same
files again and again until the path grows too long, so such a folder is skipped and named in a warning. A
folder or file reached from two classes would carry both labels, so it is refused (SharedFiles). A folder
that cannot be listed is named too instead of silently contributing nothing.
"""
from __future__ import annotations

import bisect
import os
from pathlib import Path

from .imaging import IMAGE_EXTENSIONS


class SharedFiles(Exception):
    """A folder or image reached from two classes; str() is the whole sentence (callers raise their own error)."""


def class_folders(split) -> list[str]:
    """The class folder names of one split, sorted: its sub-folders (links included) except dot-named ones."""
    return sorted(d.name for d in Path(split).iterdir() if d.is_dir() and not d.name.startswith("."))


def no_images(split, empty: list[str]) -> str:
    """The sentence for class folders of `split` that hold no images: as classes they would be counted and never
    seen, so the output layer and --num-classes would not match the data."""
    more = f"; nor do {len(empty) - 1} more class folders there" if len(empty) > 1 else ""
    return (f"class folder {Path(split) / empty[0]} holds no images ({', '.join(IMAGE_EXTENSIONS)}{more}): put the "
            "class's images in it, or remove it from both train/ and val/.")


def walk_classes(split, classes: list[str], warn=print) -> dict[str, list[tuple[str, list[str]]]]:
    """class name -> (folder, sorted file names) for split/<class> and every folder below it, sorted by folder
    path; `warn(line)` names each folder skipped (a link up the tree or to a folder its class already listed, or
    one that cannot be read). Raises SharedFiles when a folder, or an image through a file link, is reached
    from two classes."""
    owners, links, walks = {}, [], {}
    for name in classes:
        walks[name] = _walk(Path(split) / name, warn, owners, name, links)
    _check_links(links, owners)
    return walks


def _walk(top: Path, warn, owners: dict, owner, links: list) -> list[tuple[str, list[str]]]:
    """One class's listing, recording each listed folder in `owners` ((dev, inode) -> (class, path, files)) and
    each linked image in `links` ((class, path)); a folder another class listed raises SharedFiles."""
    found = []
    above = {_key(p) for p in _parents(os.path.realpath(top))}  # a link to one of these would list `top` again
    stack = [str(top)]
    while stack:
        root = stack.pop()
        try:
            st = os.stat(root)
        except OSError as error:
            warn(f"warning: skipped {root}: it cannot be listed ({error.strerror or error})")
            continue
        key = (st.st_dev, st.st_ino)
        if key in owners and owners[key][0] != owner:
            other, path, _ = owners[key]
            raise SharedFiles(_shared(path, other, root, owner, "folder"))
        if key in owners or key in above:
            what = "back up its own tree" if key in above else "to a folder already listed"
            warn(f"warning: skipped {root}: a link {what} ({os.path.realpath(root)}), whose files would be "
                 "listed again")
            continue
        try:
            with os.scandir(root) as it:
                entries = sorted(it, key=lambda e: e.name)  # a fixed order: which of two links is kept never changes
        except OSError as error:
            warn(f"warning: skipped {root}: it cannot be listed ({error.strerror or error})")
            continue
        files, folders = [], []
        for entry in entries:
            try:
                is_dir = entry.is_dir()  # follows links; a broken link is a file, unreadable when opened
            except OSError:
                is_dir = False
            (folders if is_dir else files).append(entry.name)
            if not is_dir and entry.is_symlink() and _is_image(entry.name):
                links.append((owner, os.path.join(root, entry.name)))
        owners[key] = (owner, root, files)
        found.append((root, files))
        stack += [os.path.join(root, d) for d in reversed(folders)]  # depth first, in name order
    return sorted(found)


def _check_links(links: list, owners: dict) -> None:
    """A file link to an image another class lists, or two classes linking one image: SharedFiles."""
    targets = {}
    for owner, path in links:
        real = os.path.realpath(path)
        folder, name = _key(os.path.dirname(real)), os.path.basename(real)
        if folder is None or not os.path.exists(real):
            continue  # a broken link: skipped as unreadable when opened
        listed = owners.get(folder)
        if listed and listed[0] != owner and _is_image(name) and _contains(listed[2], name):
            raise SharedFiles(_shared(path, owner, os.path.join(listed[1], name), listed[0], "file"))
        first = targets.setdefault((folder, name), (owner, path))
        if first[0] != owner:
            raise SharedFiles(_shared(first[1], first[0], path, owner, "file"))


def _shared(path: str, owner: str, other_path: str, other: str, what: str) -> str:
    images = "its images" if what == "folder" else "the image"
    return (f"{path} in class {owner} and {other_path} in class {other} are the same {what}, so {images} would carry "
            "both labels: remove the link, or move the images into the one class they belong to.")


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _contains(names: list[str], name: str) -> bool:
    i = bisect.bisect_left(names, name)  # a folder's names are sorted
    return i < len(names) and names[i] == name


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
