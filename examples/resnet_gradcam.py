"""Grad-CAM, guided backprop and SmoothGrad on a torchvision ResNet-18: rlviz is not only for RL.

    python examples/resnet_gradcam.py --image photo.jpg --weights resnet18.pth --out resnet.png

Without ``--weights`` the network has random weights (nothing is downloaded at run time), which
shows the mechanics, not a trained classifier's focus; pass a local state dict to see a real one
(it is read with ``torch.load(weights_only=True)``). Without ``--image`` a synthetic image is used.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.models import resnet18

import rlviz

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def imagenet_preprocess(obs: torch.Tensor) -> torch.Tensor:
    """uint8 [B, H, W, 3] -> ImageNet-normalised float [B, 3, H, W]."""
    x = obs.permute(0, 3, 1, 2).float() / 255.0
    return (x - MEAN.to(x.device)) / STD.to(x.device)


def synthetic_image(size: int = 224) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    image = np.zeros((size, size, 3), np.uint8)
    image[..., 2] = (120 + 60 * np.sin(xx / 17.0)).astype(np.uint8)
    disc = (yy - size * 0.4) ** 2 + (xx - size * 0.6) ** 2 < (size * 0.18) ** 2
    image[disc] = (220, 40, 30)
    return image


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, default=None, help="an RGB image (resized to 224x224)")
    parser.add_argument("--weights", type=Path, default=None, help="a local ResNet-18 state dict")
    parser.add_argument("--out", type=Path, default=Path("videos/examples/resnet_gradcam.png"))
    args = parser.parse_args(argv)

    model = resnet18(weights=None).eval()
    if args.weights is not None:
        model.load_state_dict(torch.load(args.weights, map_location="cpu", weights_only=True))
    if args.image is not None:
        frame = np.asarray(Image.open(args.image).convert("RGB").resize((224, 224)))
    else:
        frame = synthetic_image()

    policy = rlviz.PolicyAdapter(model, preprocess=imagenet_preprocess)
    top_class = int(policy.logits(frame[None]).argmax())
    methods = ["gradcam", "guided_backprop", "smoothgrad"]
    maps = rlviz.explain(policy, frame[None], methods=methods, layer="layer4", target=top_class)

    tiles = [frame] + [rlviz.overlay(frame[None], rlviz.normalize(maps[m], mode="frame"))[0] for m in methods]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(tiles, axis=1)).save(args.out)
    print(f"class {top_class}: wrote {args.out} (input | {' | '.join(methods)})")


if __name__ == "__main__":
    main()
