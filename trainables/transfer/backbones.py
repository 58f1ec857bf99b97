"""The ten torchvision backbones of the transfer space and where their starting weights come from.

Every backbone is built with `weights=None` (torchvision never downloads anything here) and its
ImageNet classifier, the last linear layer, is removed: the trial puts a head for the dataset's
classes on its features (trainables/transfer/model.py). Its starting weights are then loaded from:

* `imagenet`: torchvision's own file for that backbone (the DEFAULT weights: IMAGENET1K_V1 or _V2)
  in the local torch hub cache, `torch.hub.get_dir()/checkpoints/` ($TORCH_HOME/hub/checkpoints,
  by default ~/.cache/torch/hub/checkpoints), where torchvision itself keeps it. Nothing is
  downloaded unless the run says `--download` (then torch.hub fetches it there, hash checked);
  a missing file is an error naming the path, `--download` and `--weights none`;
* a PATH: a state dict of the same architecture in torchvision's parameter names (what
  `python3 -m trainables.transfer.export` writes from a trained trial, or a torchvision file);
  the backbones it fits are found by its names and shapes, and only those are searched;
* `none`: torchvision's random initialisation (training from scratch).

Files are read with `torch.load(weights_only=True)` (trainables/safe_load.py): a pickle that asks
for anything but tensors and plain containers is refused, and so is a file that is not a mapping
of parameter names to tensors. The classifier's parameters in a file (its 1000 ImageNet classes,
or another run's classes) are not loaded; every other parameter must match by name and shape.

Sizes: `saved_bytes(module)` is the size of a network's state dict as `torch.save` writes it
(measured by writing it to a byte counter), the model size on disk that `--max-model-mb` bounds
(trainables/transfer/model.py `weight_bytes` for a trial's network); `body_bytes(name)` the tensor bytes of the backbone alone, a lower bound
the space's define-by-run function filters backbones with before it knows the dataset.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["BACKBONES", "BODY", "WeightsError", "body_bytes", "build_backbone", "fitting_backbones", "hub_file",
           "load_weights", "read_state_dict", "saved_bytes"]


@dataclass(frozen=True)
class Backbone:
    classifier: str  # the submodule path of torchvision's last linear layer (removed: the trial's head replaces it)
    kwargs: tuple[tuple[str, Any], ...] = ()  # builder arguments beside weights=None
    skip: tuple[str, ...] = ()  # parameter-name prefixes in torchvision's weight file that the built network lacks


BACKBONES: dict[str, Backbone] = {
    "resnet18": Backbone("fc"),
    "resnet50": Backbone("fc"),
    "resnext50_32x4d": Backbone("fc"),
    "regnet_y_400mf": Backbone("fc"),
    "regnet_y_800mf": Backbone("fc"),
    "regnet_y_1_6gf": Backbone("fc"),
    "shufflenet_v2_x1_0": Backbone("fc"),
    # GoogLeNet without its two auxiliary classifiers (training-time only; their weights are in the file)
    "googlenet": Backbone("fc", (("aux_logits", False), ("init_weights", True), ("transform_input", False)), ("aux1.", "aux2.")),
    "efficientnet_b0": Backbone("classifier.1"),
    "mobilenet_v3_large": Backbone("classifier.3"),
}


class WeightsError(ValueError):
    """Starting weights that cannot be used: the message names the file and what to do."""


def _replace(module: nn.Module, path: str, new: nn.Module) -> nn.Module:
    """Put `new` at submodule `path`; returns what was there."""
    parent_path, _, name = path.rpartition(".")
    parent = module.get_submodule(parent_path) if parent_path else module
    old = getattr(parent, name) if not name.isdigit() else parent[int(name)]
    if name.isdigit():
        parent[int(name)] = new
    else:
        setattr(parent, name, new)
    return old


def build_backbone(name: str) -> tuple[nn.Module, int]:
    """(torchvision's `name` with weights=None and its classifier replaced by Identity, its feature width)."""
    import torchvision

    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; known: {', '.join(BACKBONES)}")
    spec = BACKBONES[name]
    net = torchvision.models.get_model(name, weights=None, **dict(spec.kwargs))
    last = _replace(net, spec.classifier, nn.Identity())
    if not isinstance(last, nn.Linear):
        raise TypeError(f"{name}: expected a linear classifier at {spec.classifier}, found {type(last).__name__}")
    return net, int(last.in_features)


def hub_file(name: str) -> Path:
    """Where torchvision keeps `name`'s DEFAULT ImageNet weights in the local torch hub cache."""
    import torchvision

    url = torchvision.models.get_model_weights(name).DEFAULT.url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def fetch_imagenet(name: str) -> Path:
    """Download `name`'s ImageNet weights into the hub cache (hash checked): only on --download."""
    import torchvision

    url = torchvision.models.get_model_weights(name).DEFAULT.url
    torch.hub.load_state_dict_from_url(url, model_dir=str(hub_file(name).parent), check_hash=True, map_location="cpu",
                                       weights_only=True)
    return hub_file(name)


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """A state dict (parameter name -> tensor) from `path`, read without running code; WeightsError
    when the file is missing, not a safe pickle, or not such a mapping."""
    from trainables.safe_load import UnsafeFile, load_torch

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"no weights file {path}")
    try:
        payload = load_torch(path)
    except UnsafeFile as exc:
        raise WeightsError(str(exc)) from None
    except Exception as exc:
        raise WeightsError(f"{path} cannot be read as a torch file ({type(exc).__name__}: {exc})") from None
    if isinstance(payload, Mapping) and "state_dict" in payload and isinstance(payload["state_dict"], Mapping):
        payload = payload["state_dict"]  # a checkpoint that wraps its state dict
    if not isinstance(payload, Mapping) or not payload or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in payload.items()):
        raise WeightsError(f"{path} is not a state dict (a mapping of parameter names to tensors): write one with "
                           "torch.save(model.state_dict(), PATH), or python3 -m trainables.transfer.export")
    return dict(payload)


def _strip(name: str, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The parameters of `state` the built backbone has: not the classifier's, not what it skips."""
    spec = BACKBONES[name]
    drop = (spec.classifier + ".", *spec.skip)
    return {k: v for k, v in state.items() if not k.startswith(drop)}


@lru_cache(maxsize=None)
def _shapes(name: str) -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of the built backbone (on the meta device where its builder allows:
    no memory, no initialisation; RegNet's builder computes its widths with real tensors)."""
    with torch.random.fork_rng(devices=[]):  # a trial's seeded random stream is not this lookup's to consume
        try:
            with torch.device("meta"):
                net, _ = build_backbone(name)
        except (NotImplementedError, RuntimeError):
            net, _ = build_backbone(name)
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def fitting_backbones(state: Mapping[str, torch.Tensor]) -> list[str]:
    """The backbones whose every parameter `state` holds under the same name and shape."""
    out = []
    for name in BACKBONES:
        mine = _strip(name, state)
        if {k: tuple(v.shape) for k, v in mine.items()} == _shapes(name):
            out.append(name)
    return out


def load_weights(net: nn.Module, name: str, weights: str, *, download: bool = False) -> str:
    """Load the starting weights into a built backbone: "none", "imagenet" or a PATH (see the module
    docstring). Returns where they came from."""
    if weights == "none":
        return "none (torchvision's initialisation)"
    if weights == "imagenet":
        path = hub_file(name)
        if not path.is_file():
            if not download:
                raise WeightsError(f"no ImageNet weights for {name} at {path} (torchvision's file in the local torch hub "
                                   "cache, $TORCH_HOME/hub/checkpoints): put the file there, pass --download to fetch it "
                                   "(needs network access), or train from scratch with --weights none")
            fetch_imagenet(name)
    else:
        path = Path(weights)
    state = read_state_dict(path)
    mine = _strip(name, state)
    try:
        net.load_state_dict(mine, strict=True)
    except RuntimeError as exc:
        fits = fitting_backbones(state)
        hint = f"it fits {', '.join(fits)}" if fits else "it fits none of the transfer backbones"
        detail = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise WeightsError(f"{path} does not hold {name}'s weights ({detail}); {hint}") from None
    return f"{weights} ({path})" if weights == "imagenet" else str(path)


class _Count(io.RawIOBase):
    """A file that only counts what is written to it."""

    def __init__(self) -> None:
        self.n = 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.n += len(b)
        return len(b)


def saved_bytes(module: nn.Module) -> int:
    """Bytes of the module's state dict as torch.save writes it to a file object (its weights file
    on disk; saved to a path instead, the zip's record names take the file's name, a few bytes a
    tensor more or less)."""
    sink = _Count()
    torch.save(module.state_dict(), sink)
    return sink.n


#: tensor bytes (parameters and buffers, fp32) of each backbone without its classifier, and its feature
#: width: what torchvision 0.29 builds (tests/spaces/test_transfer.py builds each and checks these)
BODY = {
    "resnet18": (44_744_608, 512),
    "resnet50": (94_245_032, 2048),
    "resnext50_32x4d": (92_192_936, 2048),
    "regnet_y_400mf": (15_721_608, 440),
    "regnet_y_800mf": (22_712_152, 784),
    "regnet_y_1_6gf": (41_465_096, 888),
    "shufflenet_v2_x1_0": (5_079_584, 1024),
    "googlenet": (22_458_312, 1024),
    "efficientnet_b0": (16_198_648, 1280),
    "mobilenet_v3_large": (16_906_096, 1280),
}


def body_bytes(name: str) -> int:
    """Tensor bytes of the backbone alone (no head, no file overhead): a lower bound of any trial's
    size on disk, known without building it."""
    return BODY[name][0]
