"""The records stored for a file system: inodes and volume registry entries, and the
attributes handed to callers (``Attr``, ``StatFs``)."""

from __future__ import annotations

import stat

import msgspec

from stratus.fs.keys import CHUNK

ROOT_INO = 1
"""The inode number of every volume's root directory."""

BLOCK = 512  # st_blocks counts 512-byte units, as on Linux


class Attr(msgspec.Struct, frozen=True, gc=False):
    """An inode's attributes, as ``stat`` reports them (times in integer nanoseconds)."""

    ino: int
    mode: int  # full st_mode: the S_IFREG/S_IFDIR/S_IFLNK bits and the permissions
    nlink: int
    uid: int
    gid: int
    size: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    blksize: int = CHUNK
    blocks: int = 0


class StatFs(msgspec.Struct, frozen=True, gc=False):
    """What ``statvfs`` reports for a volume (the store has no fixed capacity: the
    figures are large constants, and what is used is not counted)."""

    block_size: int = 4096
    blocks: int = 1 << 32
    blocks_free: int = 1 << 32
    files: int = 1 << 32
    files_free: int = 1 << 32
    name_max: int = 255


class Inode(msgspec.Struct, array_like=True, gc=False):
    """One stored inode. ``parent`` is kept for directories (which have one), so a
    rename can refuse to move a directory into its own subtree; ``target`` is a symlink's."""

    mode: int
    nlink: int
    uid: int
    gid: int
    size: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    parent: int = 0
    target: bytes = b""

    def attr(self, ino: int) -> Attr:
        return Attr(
            ino,
            self.mode,
            self.nlink,
            self.uid,
            self.gid,
            self.size,
            self.atime_ns,
            self.mtime_ns,
            self.ctime_ns,
            CHUNK,
            -(-self.size // BLOCK),
        )

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_link(self) -> bool:
        return stat.S_ISLNK(self.mode)


class VolumeRecord(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """The registry entry of a volume: the id its keys live under."""

    id: str
    created_ns: int


inode_encoder = msgspec.msgpack.Encoder()
inode_decoder = msgspec.msgpack.Decoder(Inode)
volume_decoder = msgspec.msgpack.Decoder(VolumeRecord)
