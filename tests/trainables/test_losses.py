import pytest
import torch

from trainables.losses import GranularLoss, ramp


def test_ramp_schedule():
    assert ramp(0.0, 2.0, start=1, ramp_epochs=2) == 0.0
    assert ramp(1.0, 2.0, start=1, ramp_epochs=2) == 0.0
    assert ramp(2.0, 2.0, start=1, ramp_epochs=2) == pytest.approx(1.0)
    assert ramp(3.0, 2.0, start=1, ramp_epochs=2) == pytest.approx(2.0)
    assert ramp(9.0, 2.0, start=1, ramp_epochs=2) == pytest.approx(2.0)
    assert ramp(0.99, 1.5, start=1, ramp_epochs=0) == 0.0
    assert ramp(1.0, 1.5, start=1, ramp_epochs=0) == 1.5


def test_loss_is_weighted_sum_of_cross_entropies():
    torch.manual_seed(0)
    outs = [(torch.randn(8, 10), torch.randn(8, 3)) for _ in range(2)]
    yf, yc = torch.randint(0, 10, (8,)), torch.randint(0, 3, (8,))
    fn = GranularLoss(exit_weights=[1.0, 0.5], lambda_fine=1.5, lambda_coarse=0.7)
    ce = torch.nn.functional.cross_entropy
    expect = sum(w * (1.5 * ce(f, yf) + 0.7 * ce(c, yc)) for w, (f, c) in zip([1.0, 0.5], outs))
    assert fn(outs, yf, yc, epoch=0).item() == pytest.approx(expect.item(), rel=1e-6)


def test_fine_term_off_before_its_start_and_graph_still_valid():
    outs = [(torch.randn(4, 10, requires_grad=True), torch.randn(4, 3, requires_grad=True))]
    yf, yc = torch.zeros(4, dtype=torch.long), torch.zeros(4, dtype=torch.long)
    fn = GranularLoss(exit_weights=[1.0], fine_start_epoch=2, coarse_start_epoch=2)
    loss = fn(outs, yf, yc, epoch=0.5)
    assert loss.item() == 0.0
    loss.backward()  # both terms ramped off: backward must still work
    half = GranularLoss(exit_weights=[1.0], lambda_coarse=0.0, fine_start_epoch=1, fine_ramp_epochs=2)
    ce = torch.nn.functional.cross_entropy(outs[0][0], yf).item()
    assert half(outs, yf, yc, epoch=2.0).item() == pytest.approx(0.5 * ce, rel=1e-6)


def test_exit_count_mismatch_is_an_error():
    with pytest.raises(ValueError):
        GranularLoss(exit_weights=[1.0])([(torch.randn(2, 3), torch.randn(2, 2))] * 2, torch.zeros(2).long(), torch.zeros(2).long(), 0)


def test_exit_weights_run_linearly_and_a_single_exit_is_the_last():
    from trainables.losses import exit_weights

    assert exit_weights(1.0, 0.6, 3) == pytest.approx([1.0, 0.8, 0.6])
    assert exit_weights(1.0, 0.3, 2) == pytest.approx([1.0, 0.3])
    assert exit_weights(1.0, 0.6, 1) == [0.6]  # one exit: it is the last exit, so exit_weight_last applies
    with pytest.raises(ValueError):
        exit_weights(1.0, 1.0, 0)


def test_one_level_outputs_are_branchynets_weighted_cross_entropy():
    torch.manual_seed(1)
    outs = [(torch.randn(8, 10),) for _ in range(3)]
    y = torch.randint(0, 10, (8,))
    fn = GranularLoss(exit_weights=[1.0, 0.65, 0.3], lambda_coarse=0.0)
    ce = torch.nn.functional.cross_entropy
    expect = sum(w * ce(o[0], y) for w, o in zip([1.0, 0.65, 0.3], outs))
    assert fn(outs, y, None, epoch=0).item() == pytest.approx(expect.item(), rel=1e-6)


def test_a_config_without_exit_weights_means_the_same_in_every_family():
    """One default per key: gran_hbn and branchynet read `exit_weight_*` through one function."""
    from spaces import get_space
    from trainables.engine.family import TrialInputs

    cfg = {"loss": "ce"}
    weights = []
    for name in ("gran_hbn", "branchynet"):
        space = get_space(name)
        loss = space.family(space.budget("smoke"), space.resolve_options({})).make_loss(TrialInputs(cfg), 3)
        weights.append(list(loss.exit_weights))
    assert weights[0] == weights[1] == [1.0, 1.0, 1.0]
