"""The transactional file system: volumes of inodes, directory entries and chunks in the
store, one serializable transaction per invocation, an executor-side cache, and a
path-level Python API (``FileSystem``, ``Path``) over the inode-level ``VolumeOps``."""

from stratus.fs.api import DirEntry, FileSystem
from stratus.fs.cache import FsCache, StoreReader
from stratus.fs.files import RawFile
from stratus.fs.keys import CHUNK
from stratus.fs.ops import VolumeOps
from stratus.fs.path import Path
from stratus.fs.records import ROOT_INO, Attr, StatFs
from stratus.fs.session import FsSession
from stratus.fs.transaction import FsTransaction
from stratus.fs.volume import Volume, Volumes

__all__ = [
    "CHUNK",
    "ROOT_INO",
    "Attr",
    "DirEntry",
    "FileSystem",
    "FsCache",
    "FsSession",
    "FsTransaction",
    "Path",
    "RawFile",
    "StatFs",
    "StoreReader",
    "Volume",
    "VolumeOps",
    "Volumes",
]
