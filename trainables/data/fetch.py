"""Fetching a dataset again when its files are damaged, without ever making things worse.

Only done on download=True (`--download`), when a loader found the dataset's files but they fail
their checksum or structural checks. The fresh copy is downloaded into a hidden temporary folder
inside the folder that holds the damaged files (so the same filesystem, and writable if the damaged
files can be replaced at all), checked to hold every file, and only then moved over the damaged
files one by one with os.replace (each replace is atomic). A failed or interrupted download leaves
the damaged files exactly as they were; the temporary folder is removed either way.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

from trainables.data import DatasetUnavailable, unavailable_hint

__all__ = ["refetch"]


def refetch(name: str, download: Callable[[Path], None], folder: Path, files: Mapping[str, Path]) -> None:
    """Replace damaged files with a freshly downloaded copy.

    Args:
        name: the dataset, for messages.
        download: download(tmp) fetches a complete copy into the folder `tmp`.
        folder: the folder holding the damaged files; the temporary folder is made inside it.
        files: each file's path relative to `tmp` -> the path it replaces.

    Raises:
        DatasetUnavailable: the download failed or was incomplete, or the files could not be
            replaced; the message says the damaged files were left as they were.
    """
    kept = f"the damaged files in {folder} are left as they were"
    created = not folder.exists()  # removed again if nothing ends up in it
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".refetch-{name}-", dir=folder))
    except OSError as e:
        raise DatasetUnavailable(
            f"cannot download {name} again into {folder} ({type(e).__name__}: {e}); {kept}. Point --data-root at "
            "a folder you can write to and pass --download, or replace the damaged files yourself."
        ) from e
    try:
        try:
            download(tmp)
        except DatasetUnavailable as e:
            raise DatasetUnavailable(f"{e} ({kept})") from e
        missing = sorted(rel for rel in files if not (tmp / rel).is_file())
        if missing:
            raise DatasetUnavailable(f"downloading {name} again gave no {missing}; {kept}. {unavailable_hint(name)}")
        try:
            for rel, dst in files.items():
                os.replace(tmp / rel, dst)
        except OSError as e:
            raise DatasetUnavailable(
                f"cannot replace the damaged {name} files in {folder} ({type(e).__name__}: {e}). Replace them "
                "yourself, or point --data-root at a folder you can write to and pass --download."
            ) from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if created and not any(folder.iterdir()):
            folder.rmdir()
