"""Online Gumbel cubing: the online rule yields exactly the boundaries of the training form without noise."""
import pytest
import torch

from configs import CubingConfig
from models import GumbelCubing


def online_starts(cub, feats):
    B, T = feats.shape[:2]
    state = cub.init_state(B, feats.shape[2], feats.shape[3])
    starts, ps = [], []
    for t in range(T):
        closed, p, state = cub.update(feats[:, t], state)
        starts.append(closed | (t == 0))
        ps.append(p)
    return torch.stack(starts, 1), torch.stack(ps, 1)


def drifting_features(B, T, P, D, seed):
    """Features with bursts of change, so that boundaries fall both free and forced."""
    g = torch.Generator().manual_seed(seed)
    steps = torch.randn(B, T, P, D, generator=g) * (torch.rand(B, T, 1, 1, generator=g) > 0.7)
    return steps.cumsum(1)


@pytest.mark.parametrize("B,T,seed,event_max_len", [(1, 50, 0, None), (4, 64, 1, None), (2, 120, 2, None), (4, 120, 3, 3)])
def test_online_matches_training_form(B, T, seed, event_max_len):
    torch.manual_seed(seed)
    cub = GumbelCubing(16, CubingConfig(min_len=2, max_len=9, target_len=4, trained_target_len=4, event_max_len=event_max_len))
    feats = drifting_features(B, T, 3, 16, seed)
    with torch.no_grad():
        out = cub(feats, noise=0.0)
        starts, ps = online_starts(cub, feats)
    assert torch.equal(out.starts, starts)
    assert (out.p - ps).abs().max() <= 1e-5
    assert out.starts.sum() > B  # the case is not trivial: there are boundaries beyond frame 0


def test_cube_lengths_respect_min_and_max():
    torch.manual_seed(0)
    cfg = CubingConfig(min_len=3, max_len=6, target_len=4, trained_target_len=4)
    cub = GumbelCubing(8, cfg)
    with torch.no_grad():
        cub.mlp[-1].bias.copy_(torch.tensor([-5.0, 5.0]))  # a head that always wants to close
        out = cub(drifting_features(2, 40, 2, 8, 0))
        lengths = [torch.diff(torch.cat([s.nonzero().flatten(), torch.tensor([40])])) for s in out.starts]
        assert all(l[:-1].eq(cfg.min_len).all() for l in lengths)  # closes as soon as allowed
        cub.mlp[-1].bias.copy_(torch.tensor([5.0, -5.0]))  # a head that never wants to close
        out = cub(drifting_features(2, 40, 2, 8, 0))
        lengths = [torch.diff(torch.cat([s.nonzero().flatten(), torch.tensor([40])])) for s in out.starts]
        assert all(l[:-1].eq(cfg.max_len).all() for l in lengths)  # closes only when forced


def test_a_cube_opened_at_an_event_closes_by_event_max_len_and_a_quiet_one_by_max_len():
    torch.manual_seed(4)
    cfg = CubingConfig(min_len=2, max_len=12, target_len=6, trained_target_len=6, event_max_len=4)
    cub = GumbelCubing(16, cfg)
    with torch.no_grad():
        out = cub(drifting_features(4, 300, 3, 16, 4))
    seen = {"event": [], "quiet": []}
    for starts, forced in zip(out.starts, out.forced):
        first = starts.nonzero().flatten().tolist()
        for a, b in zip(first[1:], first[2:]):  # whole cubes past the stream's first, whose opening is known
            seen["quiet" if forced[a] else "event"].append((b - a, bool(forced[b])))
    assert max(n for n, _ in seen["event"]) == cfg.event_max_len  # capped, and the cap is reached ...
    assert all(f for n, f in seen["event"] if n == cfg.event_max_len)  # ... as a forced close, not the head's
    assert max(n for n, _ in seen["quiet"]) == cfg.max_len  # after a forced close the cube may run to max_len
    with pytest.raises(ValueError, match="event_max_len"):
        CubingConfig(min_len=2, max_len=12, event_max_len=16)


def test_target_length_is_a_run_time_setting():
    """A longer target mean at run time shifts the logit so that fewer cubes close."""
    torch.manual_seed(3)
    cub = GumbelCubing(16, CubingConfig(min_len=1, max_len=64, target_len=5, trained_target_len=5))
    feats = drifting_features(4, 200, 3, 16, 3)
    with torch.no_grad():
        n_default = cub(feats).starts.sum()
        cub.cfg.target_len = 20
        n_longer = cub(feats).starts.sum()
    assert n_longer < n_default


def test_straight_through_gate_carries_gradient():
    torch.manual_seed(0)
    cub = GumbelCubing(16, CubingConfig())
    feats = drifting_features(2, 30, 3, 16, 0)
    out = cub(feats, noise=1.0)
    assert torch.allclose(out.gate, torch.ones_like(out.gate))  # value 1: features pass unchanged
    out.gate.sum().backward()
    assert cub.mlp[-1].weight.grad.abs().sum() > 0
