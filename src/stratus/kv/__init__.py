"""The key-value layer: lattice values over a store, with executor caches and
per-invocation transactions. It knows the store and the lattices, nothing above them."""

from stratus.kv.cache import KVCache
from stratus.kv.ref import Ref
from stratus.kv.transaction import KVTransaction, Reader
from stratus.kv.values import as_lattice, codec_for, merge_encoded

__all__ = ["KVCache", "KVTransaction", "Reader", "Ref", "as_lattice", "codec_for", "merge_encoded"]
