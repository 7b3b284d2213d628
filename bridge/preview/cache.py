"""A byte-bounded LRU for audio arrays: the raw and the processed stems of recent previews."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Hashable

import numpy as np


class ArrayCache:
    """Keeps the most recently used arrays while their total size stays under `max_bytes`.
    An array larger than the whole budget is not kept (it would only evict everything else)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> np.ndarray | None:
        with self._lock:
            array = self._items.get(key)
            if array is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return array

    def put(self, key: Hashable, array: np.ndarray) -> None:
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            if array.nbytes > self.max_bytes:
                return
            array.setflags(write=False)  # shared between renders: nobody may mix into it
            self._items[key] = array
            self._bytes += array.nbytes
            while self._bytes > self.max_bytes:
                _, evicted = self._items.popitem(last=False)
                self._bytes -= evicted.nbytes

    def demote(self, key: Hashable) -> None:
        """Make `key` the first to go when space is needed (e.g. a raw stem once its
        processed version is cached: a re-mix needs the latter, only a chain change the
        former)."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key, last=False)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0
