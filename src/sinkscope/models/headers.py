"""Model file headers read with the standard library, without loading a tensor: what a GGUF
file's key-value section says about the model's size."""

from __future__ import annotations

from pathlib import Path

_GGUF_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}


def gguf_sizes(path: Path) -> tuple[int | None, int | None] | None:
    """``(layers, width)`` from a GGUF header's key-value section, read with ``struct`` until the
    keys are found (the ``gguf`` package's reader maps every tensor and vocabulary entry: seconds
    for a 100 MB file). None when the header does not say (the loader then explains)."""
    import struct

    def read(f, fmt: str):
        size = struct.calcsize(fmt)
        data = f.read(size)
        if len(data) < size:
            raise ValueError("truncated")
        return struct.unpack(fmt, data)[0]

    def string(f) -> bytes:
        n = read(f, "<Q")
        if n > 1 << 24:
            raise ValueError("string too long")
        return f.read(n)

    def skip(f, kind: int) -> None:
        if kind in _GGUF_SCALARS:
            f.seek(struct.calcsize(_GGUF_SCALARS[kind]), 1)
        elif kind == 8:
            f.seek(read(f, "<Q"), 1)
        elif kind == 9:
            item, count = read(f, "<I"), read(f, "<Q")
            if item in _GGUF_SCALARS:
                f.seek(struct.calcsize(_GGUF_SCALARS[item]) * count, 1)
            else:
                for _ in range(count):
                    skip(f, item)
        else:
            raise ValueError(f"value type {kind}")

    found: dict[str, object] = {}
    try:
        with open(path, "rb") as f:
            if f.read(4) != b"GGUF" or read(f, "<I") not in (2, 3):
                return None
            read(f, "<Q")  # tensor count
            for _ in range(min(read(f, "<Q"), 1 << 20)):
                key = string(f).decode("utf-8", "replace")
                kind = read(f, "<I")
                if key == "general.architecture" and kind == 8:
                    found[key] = string(f).decode("utf-8", "replace")
                elif key.endswith((".block_count", ".embedding_length")) and kind in _GGUF_SCALARS:
                    found[key] = read(f, _GGUF_SCALARS[kind])
                else:
                    skip(f, kind)
                arch = found.get("general.architecture")
                if arch and f"{arch}.block_count" in found and f"{arch}.embedding_length" in found:
                    break
    except (OSError, ValueError, struct.error):
        return None
    arch = found.get("general.architecture")
    if not arch:
        return None

    def value(key: str) -> int | None:
        v = found.get(f"{arch}.{key}")
        return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    return value("block_count"), value("embedding_length")
