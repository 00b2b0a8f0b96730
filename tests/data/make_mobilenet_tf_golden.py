#!/usr/bin/env python3
"""PyTorch reference for the real ImageNet MobileNetV2 of ../shared (TensorFlow "SAME" padding) on
real photos: tests/data/golden/mobilenet_v2_tf_photos.golden.safetensors.

Run by hand from the repository root after building spade:
    python3 tests/data/make_mobilenet_tf_golden.py [build/spade]

The input tensors are spade's own preprocessing of the photos (`spade predict --save-input`), so
the engine is compared with PyTorch on identical inputs; only derived values are stored (logits,
input gradients and checksums of the inputs), never the photos or the inputs themselves. PyTorch
runs torchvision's MobileNetV2 with its 3x3 convs padded by F.pad as TensorFlow does (the five
stride-2 ones 0 before and 1 after), in float64 from the stored float32 weights; results are
rounded to float32.
"""
import os
import subprocess
import sys
import tarfile
import tempfile

try:
    import torch
except ImportError:
    _SYSTEM_PY = "/usr/bin/python3"
    if os.path.exists(_SYSTEM_PY) and os.path.realpath(sys.executable) != os.path.realpath(_SYSTEM_PY):
        os.execv(_SYSTEM_PY, [_SYSTEM_PY] + sys.argv)
    raise

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "bench"))
from safetensors_writer import read_safetensors, write_safetensors  # noqa: E402

SHARED = os.path.join(HERE, "..", "..", "..", "shared")
WEIGHTS = os.path.join(SHARED, "models", "imagenet_mobilenet_v2_tf.safetensors")
SAMPLES = os.path.join(SHARED, "data", "imagenet-samples", "samples.tar")
OUT = os.path.join(HERE, "golden", "mobilenet_v2_tf_photos.golden.safetensors")
# Two photos: input gradients are 150,528 floats each.
PHOTOS = ["samples/n01440764/n01440764_tench.jpg", "samples/n02123045/n02123045_tabby.jpg"]


def tf_mobilenet():
    """bench/mobilenet_tf_pytorch.py's model: every 3x3 conv padded by F.pad as TensorFlow's "SAME"
    (the five stride-2 ones 0 before and 1 after at 224x224, the others 1 on each side)."""
    from mobilenet_tf_pytorch import tf_mobilenet as build
    return build(WEIGHTS)


def spade_input(spade, photo_path, workdir):
    out = os.path.join(workdir, "x.npy")
    subprocess.run([spade, "predict", "--model", "mobilenet_v2_tf", "--weights", WEIGHTS, "--image", photo_path,
                    "--save-input", out, "--device", "cpu"], check=True, stdout=subprocess.DEVNULL)
    return torch.from_numpy(np.load(out)).float()


def main(argv):
    spade = argv[0] if argv else "build/spade"
    torch.set_num_threads(2)
    model = tf_mobilenet().double()
    tensors, photos = {}, []
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(SAMPLES) as tar:
        for i, member in enumerate(PHOTOS):
            tar.extract(member, tmp)
            x = spade_input(spade, os.path.join(tmp, member), tmp)
            assert x.shape == (1, 3, 224, 224), x.shape
            x64 = x.double().requires_grad_(True)
            logits = model(x64)
            target = int(logits.argmax())
            (grad,) = torch.autograd.grad(logits[0, target], x64)
            tensors[f"photo{i}.logits"] = logits.detach().float()
            tensors[f"photo{i}.input_grad"] = grad.float()
            tensors[f"photo{i}.input_checksum"] = torch.tensor(
                [x.double().sum().item(), x.double().abs().sum().item(), (x.double() ** 2).sum().item()]).float()
            photos.append(f"{member}:{target}")
            print(f"{member}: top class {target}, logit {logits[0, target].item():.4f}")
    meta = {"photos": ";".join(photos), "torch_version": torch.__version__,
            "input": "spade predict --save-input of each photo (spade's decode, resize 256, crop 224, [-1, 1])",
            "input_checksum": "sum, sum of |x|, sum of x^2 of the float32 input",
            "input_grad": "d logit[top class] / d input", "reference_precision": "float64, rounded to float32"}
    write_safetensors(OUT, tensors, meta)
    back, _ = read_safetensors(OUT)
    assert list(back) == list(tensors)
    print(f"wrote {os.path.relpath(OUT)} ({os.path.getsize(OUT) / 1024:.0f} KiB)")


if __name__ == "__main__":
    main(sys.argv[1:])
