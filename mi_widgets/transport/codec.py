"""Array codec: the one way arrays cross between kernel and browser.

An encoded array is a small JSON-able header plus one binary buffer, so no
float ever travels as JSON text. The TypeScript twin is ``js/src/lib/codec.ts``;
both are tested against the shared vectors in ``tests/fixtures/codec_vectors.json``.

Header fields::

    {"dtype": "float32" | "float16" | "uint8" | "int32",
     "shape": [d0, d1, ...],          # C order
     "buffer": i,                     # index into the message's buffers
     "range": [lo, hi],               # only for quantised uint8, see below
     "layout": "lower"}               # optional, see below

Buffers are little-endian. ``float16`` is IEEE half precision (NaN and inf kept).
Quantised ``uint8`` maps ``[lo, hi]`` linearly onto codes ``0..254``
(``value = lo + code * (hi - lo) / 254``) and reserves code ``255`` for
non-finite values (NaN, +inf, -inf), so broken inputs stay visible instead of
silently turning into a colour.

``layout: "lower"`` is for stacks of square matrices that are zero above the
diagonal (causal attention): ``shape`` stays the logical ``[..., n, n]`` and the
buffer carries only each lower triangle, row by row (``n(n+1)/2`` values per
matrix), halving the bytes; decoders fill the upper triangle with zeros.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

WireDtype = Literal["float32", "float16", "uint8", "int32"]
WIRE_DTYPES: tuple[str, ...] = ("float32", "float16", "uint8", "int32")
NONFINITE_CODE = 255
MAX_CODE = 254

ArrayHeader = dict[str, Any]


def to_numpy(array: Any) -> np.ndarray:
    """Return a host numpy view of a numpy array or torch tensor (detached, on CPU)."""
    if isinstance(array, np.ndarray):
        return array
    detach = getattr(array, "detach", None)
    if detach is not None:  # torch.Tensor, without importing torch here
        tensor = detach()
        if str(tensor.dtype) == "torch.bfloat16":
            tensor = tensor.float()
        return tensor.cpu().numpy()
    return np.asarray(array)


def encode_array(
    array: Any,
    dtype: WireDtype = "float16",
    *,
    value_range: tuple[float, float] | None = None,
    buffer_index: int = 0,
    layout: Literal["dense", "lower"] = "dense",
) -> tuple[ArrayHeader, bytes]:
    """Encode ``array`` as ``(header, buffer)``.

    ``dtype="uint8"`` quantises floats over ``value_range`` (default: the finite
    min and max of the data). Integer arrays already in ``0..255`` should use
    ``int32`` instead; uint8 here always means "quantised".
    """
    if dtype not in WIRE_DTYPES:
        raise ValueError(f"wire dtype must be one of {WIRE_DTYPES}, got {dtype!r}")
    values = to_numpy(array)
    header: ArrayHeader = {"dtype": dtype, "shape": [int(d) for d in values.shape], "buffer": buffer_index}
    if layout == "lower":
        values = values[..., _lower_mask(values.shape)]  # the caller vouches that the rest is zero
        header["layout"] = "lower"
    elif layout != "dense":
        raise ValueError(f"layout must be 'dense' or 'lower', got {layout!r}")
    if dtype == "uint8":
        codes, lo, hi = _quantise(values.astype(np.float32, copy=False), value_range)
        header["range"] = [lo, hi]
        return header, codes.tobytes()
    with np.errstate(over="ignore"):  # float16 overflow becomes inf, which the view shows as such
        out = np.ascontiguousarray(values, dtype=np.dtype(dtype).newbyteorder("<"))
    return header, out.tobytes()


def decode_array(header: ArrayHeader, buffers: list[bytes | memoryview]) -> np.ndarray:
    """Decode a header and the message's buffers back to a numpy array.

    Quantised uint8 decodes to float32, non-finite codes to NaN.
    """
    dtype = header.get("dtype")
    if dtype not in WIRE_DTYPES:
        raise ValueError(f"header dtype must be one of {WIRE_DTYPES}, got {dtype!r}")
    shape = tuple(int(d) for d in header["shape"])
    index = int(header.get("buffer", 0))
    if not 0 <= index < len(buffers):
        raise ValueError(f"header points at buffer {index}, but the message has {len(buffers)} buffer(s)")
    raw = memoryview(buffers[index]).cast("B")
    itemsize = np.dtype(dtype).itemsize
    layout = header.get("layout", "dense")
    if layout not in ("dense", "lower"):
        raise ValueError(f"header layout must be 'lower' or absent, got {layout!r}")
    if layout == "lower":
        mask = _lower_mask(shape)
        stored_shape = shape[:-2] + (int(mask.sum()),)
    else:
        stored_shape = shape
    expected = int(np.prod(stored_shape, dtype=np.int64)) * itemsize
    if raw.nbytes != expected:
        what = f"lower-triangle layout of shape {list(shape)}" if layout == "lower" else f"shape {list(shape)}"
        raise ValueError(f"buffer holds {raw.nbytes} bytes, but dtype {dtype} with {what} needs {expected}")
    values = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).reshape(stored_shape)
    if layout == "lower":
        dense = np.zeros(shape, dtype=values.dtype)
        dense[..., mask] = values
        values = dense
    if dtype != "uint8":
        return values.astype(np.dtype(dtype), copy=False)
    lo, hi = (float(v) for v in header["range"])
    decoded = np.asarray(lo + values.astype(np.float32) * np.float32((hi - lo) / MAX_CODE), dtype=np.float32)
    decoded[values == NONFINITE_CODE] = np.nan
    return decoded


def _lower_mask(shape: tuple[int, ...]) -> np.ndarray:
    if len(shape) < 2 or shape[-1] != shape[-2]:
        raise ValueError(f"lower-triangle layout needs square trailing dimensions, got shape {list(shape)}")
    return np.tri(shape[-1], dtype=bool)


def _quantise(values: np.ndarray, value_range: tuple[float, float] | None) -> tuple[np.ndarray, float, float]:
    finite = np.isfinite(values)
    if value_range is None:
        if finite.any():
            lo, hi = float(values[finite].min()), float(values[finite].max())
        else:
            lo, hi = 0.0, 1.0
    else:
        lo, hi = float(value_range[0]), float(value_range[1])
        if not (np.isfinite(lo) and np.isfinite(hi)) or hi < lo:
            raise ValueError(f"value_range must be finite with lo <= hi, got {value_range!r}")
    span = hi - lo
    scaled = np.zeros(values.shape, dtype=np.float64)  # float32 overflows on spans near its maximum
    if span > 0:
        np.subtract(values.astype(np.float64, copy=False), lo, out=scaled, where=finite)
        scaled *= MAX_CODE / span
    codes = np.asarray(np.clip(np.rint(scaled), 0, MAX_CODE), dtype=np.uint8)
    codes[~finite] = NONFINITE_CODE
    return codes, lo, hi
