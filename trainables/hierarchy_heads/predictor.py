"""The predictor of a hierarchy_heads point: the backbone, the superclass head, then only the child
heads the routing rule picks for each image (trainables/hierarchy_heads/routing.py states the rule).

Images are grouped by routed superclass: each child head runs once per batch, on exactly the
images routed to it, so an image costs what ran for it (`Prediction.cost`: `head_macs` and
`flops`, the backbone's FLOPs plus 2 per head MAC). A flat or low-rank head runs whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainables.hierarchy_heads.model import HierHeadsNet
from trainables.predictor import Prediction

__all__ = ["RoutedHeads"]

ALWAYS, NEVER = 2.0, -1.0  # the cascade's fine-always / never thresholds (one exit, answered fine)


class RoutedHeads:
    """A Predictor (trainables/predictor.py) of one routing setting (threshold, k)."""

    levels = ("fine", "coarse")

    def __init__(self, model: HierHeadsNet, threshold: float, k: int, mean, std, names: list[str],
                 backbone_flops: float, device: str | torch.device = "cpu") -> None:
        self.model = model.to(device).eval()
        self.threshold, self.k = float(threshold), int(k)
        self.device = torch.device(device)
        c = len(mean)
        self.mean = torch.tensor(mean, device=self.device).view(1, c, 1, 1) * 255
        self.std = torch.tensor(std, device=self.device).view(1, c, 1, 1) * 255
        self.names = list(names)
        self.backbone_flops = float(backbone_flops)
        self.thresholds = np.array([[ALWAYS], [NEVER]])  # as an exit network: one exit, every answer fine
        self.point: dict[str, Any] = {}
        self.calls: list[tuple[int, int]] = []  # (child head, images it ran on), for the last predict

    @classmethod
    def from_checkpoint(cls, path: str | Path, build_model, threshold: float, k: int, device: str = "cpu") -> RoutedHeads:
        from trainables.dynamic import data_info
        from trainables.safe_load import load_torch

        payload: dict[str, Any] = load_torch(path)
        data = data_info(payload)
        model = build_model(payload["config"], data)
        model.load_state_dict(payload["state_dict"])
        from trainables.engine.cost import count_flops

        backbone, _ = count_flops(torch.nn.Sequential(*model.stages),
                                  torch.zeros(1, data.channels, data.image_size, data.image_size))
        return cls(model, threshold, k, data.mean, data.std, list(data.fine_names), backbone, device)

    @torch.no_grad()
    def predict(self, images: np.ndarray | torch.Tensor) -> Prediction:
        """images: uint8, (N, C, H, W) or (N, H, W, C)."""
        from trainables.dynamic import network_input

        x = network_input(images, self.mean, self.std, self.device)
        head = self.model.head
        f = head.features(self.model.backbone(x))
        n = len(f)
        macs_of = head.macs()
        self.calls = []
        if not head.hierarchical:
            label = head.fine(f).float().argmax(-1)
            macs = torch.full((n,), float(macs_of["head"]), dtype=torch.float64)
        else:
            logp_s = torch.log_softmax(head.coarse(f).float(), dim=-1)
            S = logp_s.shape[1]
            p = logp_s.exp()
            entropy = (-(p * logp_s).sum(-1) / np.log(S)).clamp(0, 1) if S > 1 else torch.zeros(n, device=f.device)
            order = torch.sort(logp_s, dim=1, descending=True, stable=True).indices
            k = torch.where(entropy > self.threshold, min(self.k, S), 1)  # heads each image runs
            runs = torch.zeros(n, S, dtype=torch.bool, device=f.device)
            runs.scatter_(1, order, torch.arange(S, device=f.device)[None, :].expand(n, S) < k[:, None])
            best = torch.full((n,), -float("inf"), device=f.device)
            label = torch.zeros(n, dtype=torch.long, device=f.device)
            macs = torch.full((n,), float(macs_of["coarse"]), dtype=torch.float64)
            for g in range(S):
                idx = runs[:, g].nonzero().squeeze(1)
                if len(idx) == 0:
                    continue
                self.calls.append((g, len(idx)))
                joint = logp_s[idx, g:g + 1] + head.child_log_probs(f[idx], g)
                score, j = joint.max(dim=1)
                classes = torch.tensor(head.groups[g], device=f.device)[j]
                # the lowest class index among equal scores, whichever head it came from
                better = (score > best[idx]) | ((score == best[idx]) & (classes < label[idx]))
                best[idx] = torch.where(better, score, best[idx])
                label[idx] = torch.where(better, classes, label[idx])
                macs[idx.cpu()] += float(macs_of["children"][g])
        label_np = label.cpu().numpy()
        macs_np = macs.numpy()
        return Prediction(label=label_np, level=np.zeros(n, dtype=np.int64), exit=np.zeros(n, dtype=np.int64),
                          name=[self.names[i] for i in label_np],
                          cost={"head_macs": macs_np, "flops": self.backbone_flops + 2 * macs_np})
