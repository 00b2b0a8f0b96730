#!/usr/bin/env python3
"""Writes the reference files for tests/test_image.cpp and tests/test_image_folder.cpp.

Run by hand from the repository root with Debian's python3 (it needs PIL, numpy, torch and
torchvision):  /usr/bin/python3 tests/data/make_image_golden.py

Everything lands in tests/data/image/ and is described by image/golden.json:
  * src.png (47x31) and src_tall.png (23x41): synthetic RGB images (gradients + noise, fixed seed).
  * "resize": PIL Image.resize((w, h), BILINEAR) results, saved as PNG (lossless).
  * "resize_shorter": torchvision Resize(int) results.
  * "crop": torchvision CenterCrop((h, w)) results, including crops larger than the image.
  * "pipeline": Resize + CenterCrop + ToTensor + Normalize, saved as raw little-endian float32 in
    C order with the shape listed in the json (no header).
  * "decode": images in other encodings (grey, RGBA, palette PNG, BMP) and PIL's RGB conversion.
  * "tars": small tar archives in ustar, GNU and pax format whose members are copies of the PNG/BMP
    files above, with the ImageFolder listing expected for each (classes, and samples as
    [member name, label, source file]), computed here from tarfile's own member list.
"""
import io
import json
import os
import tarfile

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "image")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")


def synthetic(w, h, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 255 * x / (w - 1)
    g = 255 * y / (h - 1)
    b = 127.5 + 127.5 * np.sin(x / 3.0 + y / 5.0)
    img = np.stack([r, g, b], axis=-1) + rng.normal(0, 25, size=(h, w, 3))
    img[h // 3, :, :] = 255  # hard edges make rounding differences visible
    img[:, w // 2, 1] = 0
    return Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8), "RGB")


def save_png(img, name):
    img.save(os.path.join(OUT, name), format="PNG", optimize=True)
    return name


def main():
    os.makedirs(OUT, exist_ok=True)
    sources = {"src.png": synthetic(47, 31, 1234), "src_tall.png": synthetic(23, 41, 5678)}
    for name, img in sources.items():
        save_png(img, name)
    golden = {"resize": [], "resize_shorter": [], "crop": [], "pipeline": [], "decode": [], "tars": []}

    resizes = {
        "src.png": [(20, 13), (100, 66), (47, 15), (80, 31), (5, 3), (33, 29), (1, 1), (200, 7)],
        "src_tall.png": [(11, 40), (23, 97), (30, 52)],
    }
    for src, sizes in resizes.items():
        for w, h in sizes:
            out = sources[src].resize((w, h), Image.BILINEAR)
            name = save_png(out, f"{src[:-4]}_resize_{w}x{h}.png")
            golden["resize"].append({"src": src, "w": w, "h": h, "file": name})

    for src, sizes in {"src.png": [16, 64, 31, 7], "src_tall.png": [16, 30, 23]}.items():
        for s in sizes:
            out = T.Resize(s)(sources[src])
            name = save_png(out, f"{src[:-4]}_tvresize_{s}.png")
            golden["resize_shorter"].append({"src": src, "size": s, "file": name})

    crops = {"src.png": [(24, 24), (9, 17), (30, 13), (20, 40), (60, 50), (47, 31), (46, 30), (48, 31)],
             "src_tall.png": [(10, 10), (22, 40)]}
    for src, sizes in crops.items():
        for w, h in sizes:
            out = T.CenterCrop((h, w))(sources[src])
            name = save_png(out, f"{src[:-4]}_crop_{w}x{h}.png")
            golden["crop"].append({"src": src, "w": w, "h": h, "file": name})

    imagenet = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    pipelines = [("src.png", 40, 32, *imagenet), ("src_tall.png", 20, 17, [0.5, 0.25, 0.75], [0.25, 0.5, 2.0]),
                 ("src_tall.png", 0, 12, *imagenet), ("src.png", 10, 0, *imagenet)]
    for i, (src, resize, crop, mean, std) in enumerate(pipelines):
        steps = ([T.Resize(resize)] if resize else []) + ([T.CenterCrop(crop)] if crop else [])
        steps += [T.ToTensor(), T.Normalize(mean, std)]
        t = T.Compose(steps)(sources[src]).unsqueeze(0).contiguous()
        assert t.dtype == torch.float32
        name = f"pipeline_{i}.f32"
        t.numpy().astype("<f4").tofile(os.path.join(OUT, name))
        golden["pipeline"].append({"src": src, "resize": resize, "crop": crop, "mean": mean, "std": std,
                                   "shape": list(t.shape), "file": name})

    base = synthetic(9, 7, 42)
    decodes = [("grey.png", base.convert("L"), "PNG"), ("rgba.png", base.convert("RGBA"), "PNG"),
               ("palette.png", base.convert("P", palette=Image.ADAPTIVE, colors=16), "PNG"),
               ("small.bmp", base, "BMP")]
    for name, img, fmt in decodes:
        if img.mode == "RGBA":
            a = np.array(img)
            a[..., 3] = np.arange(a.shape[0] * a.shape[1]).reshape(a.shape[:2]) * 3 % 256
            img = Image.fromarray(a, "RGBA")
        img.save(os.path.join(OUT, name), format=fmt)
        expect = save_png(Image.open(os.path.join(OUT, name)).convert("RGB"), name.replace(".", "_") + "_rgb.png")
        golden["decode"].append({"file": name, "expect": expect})

    golden["tars"] = [write_tar(*spec) for spec in tar_specs()]
    with open(os.path.join(OUT, "golden.json"), "w") as f:
        json.dump(golden, f, indent=1, ensure_ascii=False)
        f.write("\n")


def tar_specs():
    """(archive name, tarfile format, top directory, long file name?)"""
    return [("ustar.tar", tarfile.USTAR_FORMAT, "root_" + "r" * 96, False),  # long path -> prefix field
            ("gnu.tar", tarfile.GNU_FORMAT, "set", True),  # long name -> 'L' entry
            ("pax.tar", tarfile.PAX_FORMAT, "set", True)]  # long name -> 'x' entry


def write_tar(tar_name, fmt, top, long_names):
    members = [  # (member name relative to top, source file in image/)
        ("cat/a.png", "src_crop_9x17.png"),
        ("cat/B.PNG", "src_crop_30x13.png"),
        ("cat/caf\u00e9.png", "src_tall_crop_10x10.png"),
        ("dog/z.bmp", "small.bmp"),
        ("dog/notes.txt", "golden_note"),
        ("deep/bird/0001.jpeg.png", "grey.png"),
        ("bird/0002.Jpg", "src_resize_5x3.png"),
    ]
    if long_names:
        members.append(("bird/" + "long_" * 25 + ".png", "src_resize_20x13.png"))
    pax = {"comment": "global header the reader must skip"} if fmt == tarfile.PAX_FORMAT else None
    buf = io.BytesIO()
    tarfile.RECORDSIZE = tarfile.BLOCKSIZE  # no padding to 10 KiB records: keeps the fixtures small
    with tarfile.open(fileobj=buf, mode="w", format=fmt, pax_headers=pax) as tf:
        for d in sorted({top} | {f"{top}/{m.rsplit('/', 1)[0]}" for m, _ in members}):
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tf.addfile(info)
        for member, source in members:
            data = b"not an image\n" if source == "golden_note" else open(os.path.join(OUT, source), "rb").read()
            info = tarfile.TarInfo(f"{top}/{member}")
            info.size = len(data)
            info.mtime = 1700000000
            if fmt == tarfile.PAX_FORMAT:
                info.pax_headers = {"size": str(len(data)), "mtime": "1700000000.25"}
            tf.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo(f"{top}/cat/link.png")  # links are not followed
        link.type = tarfile.SYMTYPE
        link.linkname = "a.png" if not long_names else "x" * 150 + ".png"
        tf.addfile(link)
        top_file = tarfile.TarInfo("toplevel.png")  # no class directory
        data = open(os.path.join(OUT, "src_resize_1x1.png"), "rb").read()
        top_file.size = len(data)
        tf.addfile(top_file, io.BytesIO(data))
    with open(os.path.join(OUT, tar_name), "wb") as f:
        f.write(buf.getvalue())

    # The expected listing, from tarfile's view of the archive we just wrote.
    sources = {f"{top}/{m}": s for m, s in members}
    samples = []
    with tarfile.open(os.path.join(OUT, tar_name)) as tf:
        for m in tf.getmembers():
            parts = m.name.split("/")
            if m.isfile() and len(parts) >= 2 and m.name.lower().endswith(IMAGE_EXTS):
                samples.append((parts[-2], m.name))
    classes = sorted({c for c, _ in samples})
    expected = sorted(([n, classes.index(c), sources.get(n, "src_resize_1x1.png")] for c, n in samples),
                      key=lambda s: (s[1], s[0].encode("utf-8")))
    return {"tar": tar_name, "classes": classes, "samples": expected}


if __name__ == "__main__":
    main()
