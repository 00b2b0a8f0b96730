#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets under fuzz/corpus/<target>/ (small valid inputs of
each kind, plus a few near-misses), from the repository's own fixtures and models and from inputs
written here. Run from the repository root (PIL comes from Debian's python3):

    /usr/bin/python3 fuzz/make_seeds.py

Deterministic; a rerun rewrites the same files. Inputs the fuzzers found crashing go to
fuzz/crashes/<target>/ by hand, named after what they broke; both directories are replayed by
tests/test_fuzz_corpus.cpp.
"""
import io
import os
import shutil
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fuzz", "corpus")


def put(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def copy(target, rel, name=None):
    with open(os.path.join(ROOT, rel), "rb") as f:
        put(target, name or os.path.basename(rel), f.read())


def safetensors_bytes(tensors, metadata=None):
    header = {}
    blob = b""
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(blob), len(blob) + len(raw)]}
        blob += raw
    if metadata:
        header["__metadata__"] = metadata
    import json
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + blob


def main():
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    # safetensors
    copy("safetensors", "tests/data/safetensors/mixed.safetensors")
    put("safetensors", "f32_2x3.safetensors",
        safetensors_bytes({"w": ("F32", [2, 3], struct.pack("<6f", *range(6)))}, {"format": "pt"}))
    put("safetensors", "f16_bf16_i64.safetensors",
        safetensors_bytes({"a": ("F16", [2], b"\x00\x3c\x00\xc0"), "b": ("BF16", [2], b"\x80\x3f\x00\x40"),
                           "c": ("I64", [1], struct.pack("<q", -7))}))
    put("safetensors", "empty_tensor.safetensors", safetensors_bytes({"e": ("F32", [0, 4], b"")}))
    put("safetensors", "truncated.safetensors",
        safetensors_bytes({"w": ("F32", [4], struct.pack("<4f", 1, 2, 3, 4))})[:-5])
    # npy
    for n in ["arange_f4.npy", "arange_f8.npy", "fortran_f4.npy", "int64.npy", "arange_f4_v2.npy"]:
        copy("npy", "tests/data/npy/" + n)
    # images: every container stb decodes that we ship fixtures for, plus JPEG, GIF, PNM, TGA
    for n in ["grey.png", "palette.png", "rgba.png", "small.bmp", "src_resize_5x3.png", "src_resize_1x1.png"]:
        copy("image", "tests/data/image/" + n)
    from PIL import Image
    im = Image.new("RGB", (9, 7))
    im.putdata([((x * 29) % 256, (y * 37) % 256, (x * y * 11) % 256) for y in range(7) for x in range(9)])
    for fmt, ext, kw in [("JPEG", "jpg", {"quality": 80}), ("GIF", "gif", {}), ("PPM", "ppm", {}), ("TGA", "tga", {})]:
        b = io.BytesIO()
        im.save(b, fmt, **kw)
        put("image", "small." + ext, b.getvalue())
    b = io.BytesIO()
    im.save(b, "JPEG", quality=80, progressive=True)
    put("image", "progressive.jpg", b.getvalue())
    # a top-down BMP (negative height), legal and decoded as PIL does
    rows = b"".join(bytes([b_, g, r, 0]) for r, g, b_ in [(255, 0, 0), (0, 255, 0), (0, 0, 255)])  # BGR + pad
    info = struct.pack("<IiiHHIIiiII", 40, 1, -3, 1, 24, 0, len(rows), 2835, 2835, 0, 0)
    put("image", "topdown.bmp", b"BM" + struct.pack("<IHHI", 14 + 40 + len(rows), 0, 0, 54) + info + rows)
    # model JSON
    copy("model_json", "models/cifar_resnet20_trojan.json")
    put("model_json", "minimal.json", """{
  "format": "spade-model", "version": 1, "input": [3, 8, 8],
  "nodes": [
    {"name": "conv", "op": "conv2d", "inputs": ["input"], "in_channels": 3, "out_channels": 4, "kernel": 3, "padding": 1},
    {"name": "bn", "op": "batchnorm2d", "inputs": ["conv"], "num_features": 4},
    {"name": "relu", "op": "relu", "inputs": ["bn"]},
    {"name": "pool", "op": "adaptive_avgpool2d", "inputs": ["relu"]},
    {"name": "flat", "op": "flatten", "inputs": ["pool"]},
    {"name": "fc", "op": "linear", "inputs": ["flat"], "in_features": 4, "out_features": 2}
  ]}""")
    put("model_json", "zoo.json", '{"format": "spade-model", "version": 1, "arch": "cifar_resnet20", "weights": "w.safetensors"}')
    # hostile fields a careful user tried (issue 21): each is refused with the field's range
    zoo = '{"format": "spade-model", "version": 1, "arch": "cifar_resnet20", %s}'
    put("model_json", "resize_2e32_plus_32_wrapped.json", zoo % '"preprocess": {"resize": 4294967328}')
    put("model_json", "crop_16000_took_4gb.json", zoo % '"preprocess": {"crop": 16000}')
    put("model_json", "mean_1e30_blamed_on_image.json", zoo % '"preprocess": {"mean": [1e30, 0, 0]}')
    put("model_json", "input_1e6_negative_flops.json", zoo % '"input": [3, 1000000, 1000000]')
    put("model_json", "dilation_2e40.json", """{"format": "spade-model", "version": 1, "nodes": [
    {"name": "c", "op": "conv2d", "inputs": ["input"], "in_channels": 3, "out_channels": 4, "kernel": 3,
     "dilation": 1099511627776}]}""")
    put("model_json", "missing_op.json", '{"format": "spade-model", "version": 1, "nodes": [{"name": "a", "inputs": ["input"]}]}')
    # sparsity schedules
    copy("sparsity", "models/tuned/saliency.json")
    copy("sparsity", "docs/results/featurevis-2026-11-26/last-stage-0.9.json")
    put("sparsity", "bad_prefix.json", '{"layer9": 0.5}')
    # Trojan rules
    copy("rules", "models/trojan-eval.rules.json")
    copy("rules", "models/trojan-tune.rules.json")
    # objectives
    for i, text in enumerate(["fc:1", "linear:3", "layer3:0-7", "layer2:1@3,4 + -2*logit:0, layer1:0@center",
                              "0.5*layer3.1.relu2:5 + logit:1", "layer3:64", "x*linear:1"]):
        put("objective", "obj%d.txt" % i, text)
    # command lines, one argument per line
    for i, args in enumerate([["--model", "cifar_resnet20", "--steps", "16", "--lr", "0.05"],
                              ["--threads", "2", "--sparsity", "0.9", "--objective", "logit:3,layer3:5", "--quiet"],
                              ["--width", "0.5", "--steps=12"], ["--help"], ["--steps", "99999999999999999999"],
                              ["--lr", "nan"], ["positional"], ["--threads", "100000"], ["--threads", "-1"],
                              ["--num-classes", "0"], ["--width", "1e308"]]):
        put("cli", "args%d.txt" % i, "\n".join(args))
    total = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(OUT) for f in fs)
    print("wrote", OUT, total, "bytes")


if __name__ == "__main__":
    sys.exit(main())
