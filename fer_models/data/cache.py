"""On-disk cache of decoded datasets, so a dataset is decoded once per machine, not per run.

A cache file is keyed by the resolved source path, the reader name, :data:`CACHE_VERSION` and a
fingerprint of the source (size and mtime of the file, or of every file under the folder): any
edit to the source makes a new key, and the stale file of the same source is removed.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from fer_models.common.atomic import atomic_write_bytes
from fer_models.data.store import FaceStore

logger = logging.getLogger(__name__)

#: Bump when the stored layout or any reader's output changes, so old cache files are ignored.
CACHE_VERSION = 1
_META_PREFIX = "meta__"
_HEADER_KEY = "header_json"


def default_cache_dir() -> Path:
    """``$FEDFER_CACHE`` if set, else ``~/.cache/fedfer``."""
    env = os.environ.get("FEDFER_CACHE", "")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fedfer"


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """The cache folder a run uses: its ``cache-dir`` setting when given (``~`` expanded), else
    :func:`default_cache_dir`. Datasets and pre-trained initial models both live under it."""
    return Path(cache_dir).expanduser() if cache_dir else default_cache_dir()


def _walk_files(folder: str, prefix: str, out: list[tuple[str, int, int]]) -> None:
    with os.scandir(folder) as it:
        for entry in it:
            rel = prefix + entry.name
            if entry.is_dir(follow_symlinks=True):
                _walk_files(entry.path, rel + "/", out)
            else:
                st = entry.stat()
                out.append((rel, st.st_size, st.st_mtime_ns))


def source_fingerprint(source: Path) -> str:
    """Hex digest over size+mtime of a file, or (path, size, mtime) of every file under a folder."""
    st = source.stat()
    if not source.is_dir():
        return hashlib.sha256(f"file\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()
    files: list[tuple[str, int, int]] = []
    _walk_files(str(source), "", files)
    files.sort()
    digest = hashlib.sha256(b"dir\0")
    for rel, size, mtime in files:
        digest.update(f"{rel}\0{size}\0{mtime}\n".encode())
    return digest.hexdigest()


def _cache_stem(source: Path, reader_name: str) -> str:
    """File-name stem shared by all cache files of one (source, reader), whatever the fingerprint."""
    ident = hashlib.sha256(f"{source}\0{reader_name}".encode()).hexdigest()[:12]
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in source.name)[:40]
    return f"{reader_name}-{safe}-{ident}"


def _save(store: FaceStore, *, file: Path, key: str) -> None:
    header = {"key": key, "name": store.name, "source": store.source, "synthetic": store.synthetic,
              "meta": sorted(store.meta)}
    arrays: dict[str, np.ndarray] = {
        _HEADER_KEY: np.array(json.dumps(header)),
        "images": store.images.numpy(),
        "labels": store.labels.numpy(),
        "splits": store.splits.numpy(),
    }
    for name, values in store.meta.items():
        values = np.asarray(values)
        arrays[_META_PREFIX + name] = values.astype(str) if values.dtype == object else values
    file.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(file, buf.getvalue())


def _load(file: Path, *, key: str) -> FaceStore:
    with np.load(file, allow_pickle=False) as data:
        header = json.loads(str(data[_HEADER_KEY][()]))
        if header.get("key") != key:
            raise ValueError(f"cache key mismatch (file holds {header.get('key')!r})")
        meta = {name: data[_META_PREFIX + name] for name in header["meta"]}
        return FaceStore(
            name=header["name"],
            images=torch.from_numpy(data["images"]),
            labels=torch.from_numpy(data["labels"]),
            splits=torch.from_numpy(data["splits"]),
            source=header["source"],
            synthetic=bool(header["synthetic"]),
            meta=meta,
        )


def _remove_stale(directory: Path, stem: str, keep: Path) -> None:
    for old in directory.glob(stem + "-*.npz"):
        if old != keep:
            try:
                old.unlink()
                logger.info("removed stale dataset cache %s", old)
            except OSError as exc:
                logger.warning("could not remove stale dataset cache %s: %s", old, exc)


def cached_load(*, source: Path, reader_name: str, reader: Callable[[], FaceStore],
                cache_dir: str | Path | None = None) -> FaceStore:
    """Return ``reader()``'s store, from the cache when the source is unchanged since last time.

    ``reader`` is called only when no valid cache file exists; a corrupt or unreadable cache
    file is logged and rebuilt. Failing to write the cache is logged, never fatal.
    """
    source = Path(source).resolve()
    directory = cache_root(cache_dir)
    fingerprint = source_fingerprint(source)
    key = hashlib.sha256(
        f"{source}\0{reader_name}\0{CACHE_VERSION}\0{fingerprint}".encode()).hexdigest()
    stem = _cache_stem(source, reader_name)
    file = directory / f"{stem}-{key[:16]}.npz"
    if file.is_file():
        try:
            store = _load(file, key=key)
            logger.info("loaded %s from cache %s", store.name, file)
            return store
        except Exception as exc:  # noqa: BLE001 - any damage to a cache file means: rebuild it
            logger.warning("dataset cache %s is unreadable (%s: %s); rebuilding it",
                           file, type(exc).__name__, exc)
    logger.info("decoding %s (first run; cached afterwards)", source)
    store = reader()
    try:
        _save(store, file=file, key=key)
        logger.info("cached %s at %s", store.name, file)
        _remove_stale(directory, stem, keep=file)
    except OSError as exc:
        logger.warning("could not write dataset cache %s (%s); the next run decodes again",
                       file, exc)
    return store
