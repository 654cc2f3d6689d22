"""Files and folders copyjob creates that may hold data are private to the user who runs it.

Outputs (file and Parquet destinations, their temporary files and markers), the folders copyjob creates for
them, and the SQLite and DuckDB database files it creates: folders get mode 0700, files 0600. The umask still
applies, so a stricter one wins (never a looser mode). Folders and files that already exist keep their modes:
they are the user's to decide. Libraries that create files themselves are handled where they are opened:
SQLite gives its side files (``-wal``, ``-shm``, ``-journal``) the mode of the database file, so an empty
private file is created first; DuckDB cannot open an empty file, so the database file it made is restricted
right after (its ``.wal`` follows the process umask, which the ``copyjob`` command tightens:
:func:`private_umask`).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

FOLDER_MODE = 0o700
FILE_MODE = 0o600


def make_private_folder(folder: str | Path) -> None:
    """Create ``folder`` and its missing parents, each 0700 (less what the umask takes away); folders that
    exist are left as they are."""
    folder = Path(folder)
    missing = [p for p in (folder, *folder.parents) if not os.path.lexists(p)]
    for path in reversed(missing):
        try:
            os.mkdir(path, FOLDER_MODE)
        except FileExistsError:  # another process or thread made it meanwhile: its mode is its own
            continue


def create_private_file(path: str | Path) -> bool:
    """Create ``path`` empty with mode 0600 (less the umask) unless it exists; True when it was created.
    An existing file is never changed."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), FILE_MODE)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def restrict_created_file(path: str | Path) -> None:
    """Take group and other permissions off a file copyjob just created through a library that gave it the
    default mode (never adds a permission)."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return
    if mode & 0o077:
        os.chmod(path, mode & FILE_MODE)


def private_umask() -> int:
    """Add group and other to the process umask (0022 becomes 0077; a stricter one stays as it is), so that
    whatever a library creates behind copyjob's back is private too. Returns the umask before. Never goes
    through a looser value, so other threads creating files meanwhile lose nothing."""
    before = os.umask(0o077)
    os.umask(before | 0o077)
    return before
