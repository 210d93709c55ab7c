"""Process environment for the local runtime (demo, `opentrail local`): set for a while, then
restore exactly what the caller had."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager


@contextmanager
def patched_environ(values: Mapping[str, str], removed: Iterable[str] = ()) -> Iterator[None]:
    """Set `values` and unset `removed` for the duration; restore the previous values after."""
    removed = tuple(removed)
    saved = {name: os.environ.get(name) for name in (*values, *removed)}
    os.environ.update(values)
    for name in removed:
        os.environ.pop(name, None)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
