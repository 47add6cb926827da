"""The host-memory codec: one definition of how integer rows become host words and back.

Host memory is word-addressed (see :mod:`cdmqta.hw.isa`, memory model): a word is ``4 * lanes`` bytes,
little-endian. The runtime keeps an image of it as a numpy ``uint8`` array ``[words, 4 * lanes]``; the simulators
see each word as one integer. Row formats (``kind``):

- ``int8``  -- byte lanes 0 .. of the word's low ``lanes`` bytes (packed INT4 operands are int8 bytes too);
- ``int32`` -- 32-bit lanes 0 .. (column j = bytes 4j .. 4j+3);
- ``raw``   -- the words themselves, as Python ints.
"""

import numpy as np

__all__ = ["KINDS", "new_image", "image_words", "words_image", "pack_rows", "unpack_words", "rows_image",
           "image_rows"]

KINDS = ("int8", "int32", "raw")
_DTYPE = {"int8": np.int8, "int32": "<i4"}
_RANGE = {"int8": (-(1 << 7), (1 << 7) - 1), "int32": (-(1 << 31), (1 << 31) - 1)}


def _kind(kind):
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} must be one of {KINDS}")
    return kind


def new_image(words, lanes):
    """An all-zero host-memory image of ``words`` words."""
    return np.zeros((words, 4 * lanes), np.uint8)


def image_words(image):
    """The words (Python ints) of an image's rows."""
    return [int.from_bytes(r.tobytes(), "little") for r in np.asarray(image, np.uint8)]


def words_image(words, nbytes):
    """The image ``uint8 [len(words), nbytes]`` of a list of words."""
    return np.frombuffer(b"".join(int(w).to_bytes(nbytes, "little") for w in words), np.uint8).reshape(-1, nbytes)


def rows_image(rows, kind, lanes):
    """Image ``uint8 [rows, 4 * lanes]`` of an integer array ``[rows, <= lanes]`` in format ``kind`` (int8 / int32);
    values outside the format's range raise ValueError."""
    kind = _kind(kind)
    a = np.asarray(rows)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2 or a.shape[1] > lanes:
        raise ValueError(f"host rows must be a 2-D array with at most lanes={lanes} columns, got shape {a.shape}")
    lo, hi = _RANGE[kind]
    if a.size and (a.min() < lo or a.max() > hi):
        raise ValueError(f"{kind} host rows out of range [{lo}, {hi}]")
    image = new_image(a.shape[0], lanes)
    width = np.dtype(_DTYPE[kind]).itemsize
    image[:, :width * a.shape[1]] = a.astype(_DTYPE[kind]).view(np.uint8).reshape(a.shape[0], -1)
    return image


def image_rows(image, kind, lanes=None):
    """int64 array ``[rows, lanes]`` of an image's rows read in format ``kind`` (int8 / int32)."""
    kind = _kind(kind)
    image = np.ascontiguousarray(image, np.uint8)
    lanes = image.shape[1] // 4 if lanes is None else lanes
    width = np.dtype(_DTYPE[kind]).itemsize
    return image[:, :width * lanes].view(_DTYPE[kind]).astype(np.int64)


def pack_rows(rows, kind, lanes):
    """Host words (Python ints) of an integer array ``[rows, <= lanes]`` in format ``kind`` (``raw``: the ints)."""
    if _kind(kind) == "raw":
        return [int(w) for w in rows]
    return image_words(rows_image(rows, kind, lanes))


def unpack_words(words, kind, lanes):
    """Inverse of :func:`pack_rows`: int64 array ``[len(words), lanes]`` (``raw``: the ints)."""
    if _kind(kind) == "raw":
        return list(words)
    return image_rows(words_image(words, 4 * lanes), kind, lanes)
