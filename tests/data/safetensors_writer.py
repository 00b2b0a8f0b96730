"""The one safetensors writer (and checking reader) of the fixture scripts (the `safetensors` python package is not
available here): 8-byte little-endian header length, JSON header (with "__metadata__" first when
given) padded with spaces to a multiple of 8, then the tensors' bytes contiguously in the given
order. Written to a temporary file and renamed."""
import json
import os
import struct

import sys

import torch

if sys.byteorder != "little":
    raise SystemExit("the fixture scripts write little-endian files and assume a little-endian machine")

DTYPES = {
    torch.float32: ("F32", 4),
    torch.float16: ("F16", 2),
    torch.bfloat16: ("BF16", 2),
    torch.float64: ("F64", 8),
    torch.int64: ("I64", 8),
    torch.int32: ("I32", 4),
    torch.uint8: ("U8", 1),
    torch.bool: ("BOOL", 1),
}


def tensor_bytes(t):
    """Little-endian bytes of a tensor, through a same-width integer view (numpy has no bfloat16)."""
    t = t.detach().cpu().contiguous()
    if t.dtype not in DTYPES:
        raise TypeError(f"unsupported dtype {t.dtype}")
    if t.dtype == torch.bool:
        t = t.to(torch.uint8)
    as_int = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[DTYPES[t.dtype][1]]
    raw = t if t.dtype == as_int else t.view(as_int)
    return raw.numpy().tobytes()  # native order: little-endian, checked at import


def write_safetensors(path, tensors, metadata=None):
    """tensors: a dict or a list of (name, tensor) pairs; metadata: str -> str."""
    items = tensors.items() if isinstance(tensors, dict) else tensors
    header = {}
    if metadata:
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise TypeError(f"{path}: __metadata__ must map strings to strings ({k!r})")
        header["__metadata__"] = dict(metadata)
    blobs, offset = [], 0
    for name, t in items:
        blob = tensor_bytes(t)
        header[name] = {"dtype": DTYPES[t.dtype][0], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    if os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)
    os.replace(tmp, path)


def read_safetensors(path):
    """Independent reader used only to check what write_safetensors produced: (tensors, metadata).
    F32 and I64 entries; the data must be contiguous in header order with no stray bytes."""
    import numpy as np
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    assert n % 8 == 0, path
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {})
    data = raw[8 + n:]
    out, end = {}, 0
    for name, info in header.items():
        np_dtype = {"F32": "<f4", "I64": "<i8"}[info["dtype"]]
        a, b = info["data_offsets"]
        assert a == end, (path, name)
        out[name] = torch.from_numpy(np.frombuffer(data[a:b], dtype=np_dtype).reshape(info["shape"]).copy())
        end = b
    assert end == len(data), f"{path}: data section has {len(data) - end} stray bytes"
    return out, meta
