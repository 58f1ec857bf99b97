"""Cost as executed: the cascade's Prediction says, per image, the FLOPs of what ran for it."""

from __future__ import annotations

import numpy as np
import torch

from trainables.dynamic import DynamicClassifier
from trainables.exits import ALWAYS, NEVER
from trainables.models import build_early_exit_net
from trainables.predictor import expected_cost


def _classifier(first_exit_threshold: float) -> DynamicClassifier:
    torch.manual_seed(0)
    net = build_early_exit_net({"backbone": "resnet", "resnet.width": 4, "resnet.blocks": 1, "resnet.n_stages": 2,
                                "exit_after": [0, 1]}, 3, {"fine": 4})
    t = np.array([[first_exit_threshold, ALWAYS]])
    return DynamicClassifier(net, t, (0.5,) * 3, (0.25,) * 3, {"fine": list("abcd")},
                             exit_costs={"flops": [100.0, 250.0]})


def test_each_image_costs_what_ran_for_it_and_the_point_costs_their_mean():
    images = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
    for threshold in (NEVER, ALWAYS, 0.995):
        pred = _classifier(threshold).predict(images)
        expected = np.where(pred.exit == 0, 100.0, 250.0)
        assert np.array_equal(pred.cost["flops"], expected)
        assert expected_cost(pred) == expected.mean()
    assert set(_classifier(NEVER).predict(images).exit.tolist()) == {1}
    assert set(_classifier(ALWAYS).predict(images).exit.tolist()) == {0}
