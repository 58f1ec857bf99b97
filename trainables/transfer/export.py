"""`python3 -m trainables.transfer.export RUN/trials/ID/model.pt --out weights.pt`: a trained transfer
trial's backbone as a state dict in torchvision's parameter names, without its head: what
`--weights PATH` starts another search from (e.g. a backbone pretrained on CIFAR-10 classes 0-4,
then searched on classes 5-9). The model file is read with the safe loader (weights_only=True) and
the output holds only tensors.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["export_backbone", "main"]


def export_backbone(model_pt: str | Path, out: str | Path) -> str:
    """Write the backbone's state dict of a transfer trial's model.pt to `out`; returns its backbone."""
    import torch

    from trainables.atomic import atomic_write
    from trainables.safe_load import load_torch
    from trainables.transfer.backbones import BACKBONES, fitting_backbones

    payload = load_torch(model_pt)
    name = str(payload.get("config", {}).get("backbone", ""))
    if name not in BACKBONES or "state_dict" not in payload:
        raise ValueError(f"{model_pt} is not a transfer trial's model.pt (its config names no torchvision backbone)")
    state = {k[len("backbone."):]: v.clone() for k, v in payload["state_dict"].items() if k.startswith("backbone.")}
    if name not in fitting_backbones(state):
        raise ValueError(f"{model_pt}: its backbone parameters do not match {name}'s")
    atomic_write(Path(out), lambda tmp: torch.save(state, tmp))
    return name


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m trainables.transfer.export", description=__doc__.split("\n\n")[0])
    p.add_argument("model_pt", help="a transfer trial's model.pt (runs/RUN/trials/ID/model.pt)")
    p.add_argument("--out", required=True, help="the state dict to write (must not exist)")
    args = p.parse_args(argv)
    if Path(args.out).exists():
        print(f"error: {args.out} exists: pick another --out (nothing is overwritten)", file=sys.stderr)
        return 2
    try:
        name = export_backbone(args.model_pt, args.out)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {name}'s backbone ({args.model_pt}) to {args.out}: pass --weights {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
