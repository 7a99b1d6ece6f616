"""What a model spec's results are computed from, as a short hash of its files (stdlib only: no
torch, no transformers), for the caches that answer for a spec without loading it (``sweep``'s
cells).

- the embedded default model, an HF directory, a ``sinkscope train`` run: every regular file at
  the top of the directory (weights, ``config.json``, tokenizer files), by name and content;
- a ``.gguf`` file (its tokenizer is inside it), a ``packaged:NAME`` model (its assembled GGUF),
  a partial ``.safetensors`` checkpoint (with the ``config.json`` beside it): the file(s);
- a hub id: the commit of the cached snapshot its revision resolves to (``hub:COMMIT``; a
  snapshot's files never change). An id not in the local cache is ``hub:ID (not cached)``: the
  run downloads it, and the next run, keyed by the commit, computes its cells once more.

A file of up to :data:`FULL_HASH_BYTES` is hashed whole (SHA-256 of its content); a larger one
by its size, modification time and the SHA-256 of its first and last :data:`EDGE_BYTES` (the
header of a safetensors or GGUF file is at its start): hashing many GB on every run would cost
more than the cells. A file copied over with other weights changes its size, mtime or header.

>>> a = fingerprint("default")
>>> a == fingerprint("default"), len(a)
(True, 16)
>>> fingerprint(object()) is None  # a model in memory has no files to hash
True
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

FULL_HASH_BYTES = 256 << 20  # files up to 256 MiB are hashed whole
EDGE_BYTES = 4 << 20  # larger ones: size, mtime and the first and last 4 MiB
_MEMO: dict[tuple, str] = {}  # (path, size, mtime, inode) -> digest, for one process


def file_digest(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's content (size, mtime and its edges above :data:`FULL_HASH_BYTES`)."""
    path = Path(os.path.realpath(path))
    st = path.stat()
    memo = (str(path), st.st_size, st.st_mtime_ns, st.st_ino)
    if memo in _MEMO:
        return _MEMO[memo]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if st.st_size <= FULL_HASH_BYTES:
            while chunk := f.read(1 << 22):
                h.update(chunk)
        else:
            h.update(f"size {st.st_size} mtime {st.st_mtime_ns}|".encode())
            h.update(f.read(EDGE_BYTES))
            f.seek(-EDGE_BYTES, os.SEEK_END)
            h.update(f.read(EDGE_BYTES))
    _MEMO[memo] = h.hexdigest()
    return _MEMO[memo]


def files_fingerprint(paths: list[Path], names: bool = True) -> str:
    """16 hex digits of the SHA-256 over ``paths`` (sorted; each file's name when ``names``, and
    its :func:`file_digest`)."""
    h = hashlib.sha256()
    for p in sorted(paths, key=lambda p: p.name):
        h.update(f"{p.name if names else ''}\0{file_digest(p)}\n".encode())
    return h.hexdigest()[:16]


def dir_files(directory: Path) -> list[Path]:
    """The regular files at the top of ``directory`` (hidden ones, such as the ``.sinkscope``
    marker, left out)."""
    return [p for p in directory.iterdir() if not p.name.startswith(".") and p.is_file()]


def fingerprint(spec: object) -> str | None:
    """A short hash of what ``spec``'s results are computed from (see the module docstring);
    None for a model in memory. ``spec`` is resolved as the loaders resolve it, after
    :func:`sinkscope.models.precheck.model_config` has checked it."""
    from .options import split_revision
    from .sources import DEFAULT_MODEL, embedded_model_dir, packaged_model_path

    if not isinstance(spec, (str, os.PathLike)):
        return None
    spec = os.fspath(spec)
    if spec == DEFAULT_MODEL:
        return files_fingerprint(dir_files(embedded_model_dir()))
    if spec.startswith("packaged:"):
        return files_fingerprint([packaged_model_path(spec.split(":", 1)[1])], names=False)
    path = Path(spec).expanduser()
    if path.is_dir():
        return files_fingerprint(dir_files(path))
    if path.is_file():
        extra = [path.parent / "config.json"] if path.suffix == ".safetensors" else []
        return files_fingerprint([path] + [p for p in extra if p.is_file()])
    repo, revision = split_revision(spec)
    return "hub:" + (_hub_commit(repo, revision) or f"{spec} (not cached)")


def _hub_commit(repo: str, revision: str | None) -> str | None:
    """The commit of the cached snapshot ``repo@revision`` resolves to (None: not cached)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo, "config.json", revision=revision)
    except Exception:  # no huggingface_hub, a malformed id: the loader says what is wrong
        return None
    if not isinstance(found, str):
        return None
    snap = Path(found).parent
    return snap.name if snap.parent.name == "snapshots" else None
