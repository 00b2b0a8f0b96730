#!/usr/bin/python3
"""By-hand end-to-end check of full-size torchvision models (too large to commit as fixtures).

    /usr/bin/python3 tests/data/check_torchvision_models.py --spade build/spade

For each architecture it saves a randomly initialised torchvision model (with non-trivial
BatchNorm statistics) as safetensors, writes a 400x300 PNG, runs torchvision's Resize(256) +
CenterCrop(224) + Normalize and the model in PyTorch, runs `spade predict --json` on the same
files, and prints the largest logit difference relative to the largest logit. Exits 1 if any
model differs by more than 1e-4 or predicts another class.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torchvision
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_writer import write_safetensors  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--spade", required=True, help="path to the spade binary")
    p.add_argument("--models", default="resnet18,resnet34,resnet50,resnet101,mobilenet_v2")
    args = p.parse_args()
    torch.manual_seed(0)
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        img_path = os.path.join(tmp, "img.png")
        Image.fromarray((np.random.RandomState(1).rand(300, 400, 3) * 255).astype(np.uint8)).save(img_path)
        tf = torchvision.transforms.Compose([
            torchvision.transforms.Resize(256), torchvision.transforms.CenterCrop(224),
            torchvision.transforms.ToTensor(),
            torchvision.transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
        x = tf(Image.open(img_path).convert("RGB")).unsqueeze(0)
        for name in args.models.split(","):
            model = getattr(torchvision.models, name)().eval()
            for m in model.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.running_mean.normal_(0, 0.1)
                    m.running_var.uniform_(0.5, 1.5)
                    m.weight.data.uniform_(0.5, 1.5)
                    m.bias.data.normal_(0, 0.1)
            weights = os.path.join(tmp, name + ".safetensors")
            write_safetensors(weights, model.state_dict())
            with torch.no_grad():
                want = model(x)[0].numpy()
            out = subprocess.run([args.spade, "predict", "--model", name, "--weights", weights, "--image", img_path,
                                  "--json"], check=True, capture_output=True, text=True).stdout
            got = np.array(json.loads(out)["logits"])
            err = float(np.abs(got - want).max() / np.abs(want).max())
            same = int(got.argmax()) == int(want.argmax())
            ok = ok and err <= 1e-4 and same
            print(f"{name:14s} max relative logit error {err:.2e}  same top-1: {same}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
