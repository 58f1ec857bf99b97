"""What a trial's training batches go through on the device, as data: `Augment`.

A family says per trial (`Family.augmentation`) how its training images are augmented, and
(`Family.input_size`) at what side its network sees them; trainables/engine/device_data.py does it
on the device, batched, from the uint8 split. The default, `Augment()`, is the engine's augmentation
from before there was a choice: pad by a side/8 and crop back at random, flip half the images.

* `crop`: "pad" (that default), "resized" (a random-resized crop, as torchvision's
  RandomResizedCrop: a box of `scale` times the image's area and aspect ratio 3/4..4/3, log-uniform,
  at a random place, resampled to the input side) or "none";
* `flip`: mirror half the images left-right;
* `rotation`: a uniform random rotation in [-rotation, rotation] degrees (corners filled black);
* `jitter`: brightness, contrast and saturation each scaled by a uniform factor in
  [1 - jitter, 1 + jitter] (torchvision's ColorJitter order), values clamped to the pixel range;
* `grey`: the probability that an image is turned grey (ITU-R 601 luma, on its three channels).

These are the research's transforms (../shared/RESEARCH.md: resize, crop, flip, colour jitter,
rotation, grey scale), without a PIL pipeline per sample. Evaluation images are only resized to the
input side (bilinear, antialiased), never augmented.

Pure data: no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CROPS", "Augment"]

CROPS = ("pad", "resized", "none")


@dataclass(frozen=True)
class Augment:
    crop: str = "pad"
    scale: tuple[float, float] = (0.35, 1.0)  # area fraction of a "resized" crop
    flip: bool = True
    rotation: float = 0.0  # degrees
    jitter: float = 0.0
    grey: float = 0.0  # probability

    def __post_init__(self) -> None:
        if self.crop not in CROPS:
            raise ValueError(f"augmentation crop {self.crop!r} is not one of {', '.join(CROPS)}")
        lo, hi = self.scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"augmentation scale must be 0 < low <= high <= 1, got {self.scale}")
        if not 0 <= self.rotation <= 180 or not 0 <= self.jitter < 1 or not 0 <= self.grey <= 1:
            raise ValueError(f"augmentation out of range: rotation {self.rotation} (0..180 degrees), jitter {self.jitter} "
                             f"(0..1), grey {self.grey} (a probability)")

    @property
    def default_geometry(self) -> bool:
        """Pad-crop and flip only: the engine's augmentation from before there was a choice."""
        return self.crop == "pad" and self.rotation == 0

    def describe(self) -> dict:
        return {"crop": self.crop, "scale": list(self.scale), "flip": self.flip, "rotation": self.rotation,
                "jitter": self.jitter, "grey": self.grey}
