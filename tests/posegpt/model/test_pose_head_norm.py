"""The pose head's running standardiser: its statistics, its independence from batch-mates, and why it exists."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from posegpt.geometry import axis_angle_to_rotmat
from posegpt.model.pose_head import PoseHead, RunningStandardizer, head_from_state


def test_first_batch_sets_statistics_and_later_ones_move_them_by_momentum() -> None:
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(12, 5, generator=gen) * 3 + 7, torch.randn(9, 5, generator=gen)
    norm = RunningStandardizer(5, momentum=0.25, eps=1e-5).train()
    out = norm(a)
    mean_a, var_a = a.numpy().mean(0), a.numpy().var(0)
    np.testing.assert_allclose(
        out.detach().numpy(), (a.numpy() - mean_a) / np.sqrt(var_a + 1e-5), rtol=1e-5, atol=1e-5
    )
    norm(b)
    np.testing.assert_allclose(
        norm.mean.numpy(), 0.75 * mean_a + 0.25 * b.numpy().mean(0), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(norm.var.numpy(), 0.75 * var_a + 0.25 * b.numpy().var(0), rtol=1e-5, atol=1e-6)
    assert int(norm.updates) == 2
    frozen = norm.mean.clone()
    norm.eval()(torch.randn(4, 5, generator=gen) + 100)
    assert torch.equal(norm.mean, frozen), "eval must not move the statistics"


def test_a_rows_pose_does_not_depend_on_its_batch_mates() -> None:
    torch.manual_seed(0)
    head = PoseHead(16, input_norm="running")
    head.train()(torch.randn(32, 16))  # sets the statistics
    head.eval()
    x = torch.randn(6, 16)
    alone = torch.cat([head.rotmats(x[i : i + 1]) for i in range(6)])
    torch.testing.assert_close(head.rotmats(x), alone, atol=1e-6, rtol=1e-5)


def test_state_round_trip_rebuilds_the_same_head() -> None:
    torch.manual_seed(1)
    for norm in ("none", "running"):
        head = PoseHead(8, input_norm=norm, init_std=0.1)
        head.train()(torch.randn(10, 8) * 2 + 1)
        head.eval()
        copy = head_from_state(head.state_dict(), "test").eval()
        x = torch.randn(3, 8)
        torch.testing.assert_close(copy.rotmats(x), head.rotmats(x))
        assert (copy.input_norm is None) == (norm == "none")
    with pytest.raises(ValueError, match="not a pose head"):
        head_from_state({"weight": torch.zeros(1)}, "some.safetensors")
    with pytest.raises(ValueError, match="'none' or 'running'"):
        PoseHead(8, input_norm="batch")


def test_standardised_input_learns_a_readout_that_the_plain_head_misses() -> None:
    """Features = a large offset shared by every row + a small pose-dependent part (as a small LM's
    hidden states at ``<POSE>`` for image rows): with the same Adam steps, the standardised head
    fits the poses far better than the plain one."""
    gen = torch.Generator().manual_seed(0)
    n, width = 512, 32
    code = torch.randn(n, 4, generator=gen)
    poses = torch.zeros(n, 24, 3)
    poses[:, 1:5, 0] = code * 0.4  # four joints driven by the code
    features = 5.0 + 0.05 * torch.cat(
        [code, torch.randn(n, width - 4, generator=gen) * 0.1], 1
    ) @ torch.randn(width, width, generator=gen)
    target = axis_angle_to_rotmat(poses)
    errors = {}
    for norm in ("none", "running"):
        torch.manual_seed(0)
        head = PoseHead(width, input_norm=norm)
        opt = torch.optim.Adam(head.parameters(), lr=3e-4)
        for step in range(300):
            i = torch.arange(step * 16, step * 16 + 16) % n
            loss = (head.rotmats(features[i]) - target[i]).abs().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            errors[norm] = float((head.eval().rotmats(features) - target).abs().mean())
    baseline = float((axis_angle_to_rotmat(torch.zeros(n, 24, 3)) - target).abs().mean())
    assert errors["running"] < 0.5 * baseline, errors
    assert errors["running"] < 0.6 * errors["none"], (errors, baseline)
