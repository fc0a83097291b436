"""Every store key of the file system, in one place.

::

    fs/volumes/<name>                  VolumeRecord: the volume's id (a name can be reused)
    fs/v/<id>/i/<ino:016x>             Inode record
    fs/v/<id>/d/<dir ino:016x>/<name>  directory entry -> child inode number (8 bytes)
    fs/v/<id>/c/<ino:016x>/<n:08x>     chunk n of a file: bytes [n*CHUNK, n*CHUNK + len)

Names are bytes; a key holds them decoded as Latin-1, which maps each byte to one code
point, so any name is a valid key and code-point order is byte order. Directory entries
of one directory share a prefix: listing it is one prefix read, validated at commit.
"""

from __future__ import annotations

CHUNK = 64 * 1024
"""Bytes per data chunk: a small write to a big file rewrites one chunk."""

ROOT = "fs/"
VOLUMES = "fs/volumes/"


def volume_record(name: str) -> str:
    """The key of the registry entry of the volume called ``name``."""
    return VOLUMES + name


def volume_prefix(volume_id: str) -> str:
    """The prefix of every key of one volume (deleted with it)."""
    return f"fs/v/{volume_id}/"


class VolumeKeys:
    """The key names of one volume's inodes, directory entries and chunks."""

    __slots__ = ("_c", "_d", "_i", "prefix")

    def __init__(self, volume_id: str) -> None:
        self.prefix = volume_prefix(volume_id)
        self._i = self.prefix + "i/"
        self._d = self.prefix + "d/"
        self._c = self.prefix + "c/"

    def inode(self, ino: int) -> str:
        return f"{self._i}{ino:016x}"

    def entries(self, parent: int) -> str:
        """The prefix of the directory entries of directory ``parent``."""
        return f"{self._d}{parent:016x}/"

    def entry(self, parent: int, name: bytes) -> str:
        return f"{self._d}{parent:016x}/{name.decode('latin-1')}"

    def chunk(self, ino: int, index: int) -> str:
        return f"{self._c}{ino:016x}/{index:08x}"


def entry_name(key: str) -> bytes:
    """The name of the directory entry stored at ``key``."""
    return key.rpartition("/")[2].encode("latin-1")
