"""The Mamba temporal encoder: recurrent step == parallel forward, and an independent reference (mambapy)."""
import pytest
import torch

from configs import TemporalConfig
from models import MambaTemporalEncoder
from models.mamba import HAS_MAMBA_KERNELS, MambaBlock


def run_steps(enc, x):
    B, T, P, D = x.shape
    state, ys = enc.init_state(B, P), []
    for t in range(T):
        y, state = enc.step(x[:, t], state)
        ys.append(y)
    return torch.stack(ys, 1), state


@pytest.mark.parametrize("B,T", [(1, 1), (1, 17), (3, 8), (4, 40)])
def test_step_equals_forward(B, T):
    torch.manual_seed(B * 100 + T)
    enc = MambaTemporalEncoder(32, TemporalConfig(n_layers=2, d_state=8))
    x = torch.randn(B, T, 5, 32)
    with torch.no_grad():
        y_par, s_par = enc(x)
        y_rec, s_rec = run_steps(enc, x)
    assert (y_par - y_rec).abs().max() <= 1e-5
    for a, b in zip(s_par, s_rec):
        assert (a.ssm - b.ssm).abs().max() <= 1e-5
        assert (a.conv - b.conv).abs().max() <= 1e-5


def test_forward_continues_from_state():
    """A stream run chunk by chunk equals the stream run whole."""
    torch.manual_seed(1)
    enc = MambaTemporalEncoder(32, TemporalConfig(n_layers=2, d_state=8))
    x = torch.randn(2, 30, 3, 32)
    with torch.no_grad():
        whole, _ = enc(x)
        a, s = enc(x[:, :11])
        b, _ = enc(x[:, 11:], s)
    assert (torch.cat([a, b], 1) - whole).abs().max() <= 1e-5


def test_step_leaves_input_state_untouched():
    enc = MambaTemporalEncoder(16, TemporalConfig(n_layers=1))
    state = enc.init_state(2, 3)
    before = [(s.conv.clone(), s.ssm.clone()) for s in state]
    with torch.no_grad():
        enc.step(torch.randn(2, 3, 16), state)
    for s, (c, h) in zip(state, before):
        assert torch.equal(s.conv, c) and torch.equal(s.ssm, h)


@pytest.mark.parametrize("d_model,d_state,d_conv,expand", [(32, 16, 4, 2), (48, 8, 3, 1)])
def test_matches_mambapy_reference(d_model, d_state, d_conv, expand):
    """Our weights loaded into mambapy's block (same key names) give the same outputs."""
    mambapy = pytest.importorskip("mambapy.mamba", reason="mambapy is in the [test] extra")
    torch.manual_seed(0)
    ours = MambaBlock(d_model, d_state, d_conv, expand)
    with torch.no_grad():  # move away from the init so every parameter matters
        for p in ours.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ref_cfg = mambapy.MambaConfig(d_model=d_model, n_layers=1, d_state=d_state, d_conv=d_conv,
                                  expand_factor=expand, bias=False, conv_bias=True, pscan=True)
    ref = mambapy.MambaBlock(ref_cfg)
    missing, unexpected = ref.load_state_dict(ours.state_dict(), strict=True)
    assert not missing and not unexpected
    x = torch.randn(2, 23, d_model)
    with torch.no_grad():
        y_ours, _ = ours(x)
        y_ref = ref(x)
    assert (y_ours - y_ref).abs().max() <= 1e-5
    # and weights move back: mambapy's state dict loads into ours unchanged
    back = MambaBlock(d_model, d_state, d_conv, expand)
    back.load_state_dict(ref.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.equal(back(x)[0], y_ours)


def test_parameter_shapes_follow_mamba_ssm():
    blk = MambaBlock(64, d_state=16, d_conv=4, expand=2)
    shapes = {k: tuple(v.shape) for k, v in blk.state_dict().items()}
    assert shapes == {
        "in_proj.weight": (256, 64), "conv1d.weight": (128, 1, 4), "conv1d.bias": (128,),
        "x_proj.weight": (4 + 32, 128), "dt_proj.weight": (128, 4), "dt_proj.bias": (128,),
        "A_log": (128, 16), "D": (128,), "out_proj.weight": (64, 128)}


@pytest.mark.cuda
@pytest.mark.skipif(not (torch.cuda.is_available() and HAS_MAMBA_KERNELS), reason="needs CUDA and mamba-ssm")
def test_cuda_kernels_match_pure_path():
    torch.manual_seed(0)
    blk = MambaBlock(64, 16, 4, 2).cuda()
    pure = MambaBlock(64, 16, 4, 2, use_cuda_kernels=False).cuda()
    pure.load_state_dict(blk.state_dict())
    x = torch.randn(4, 64, 64, device="cuda")
    with torch.no_grad():
        y_k, s_k = blk(x)
        y_p, s_p = pure(x)
        assert (y_k - y_p).abs().max() <= 1e-4
        assert (s_k.ssm - s_p.ssm).abs().max() <= 1e-4
        u = torch.randn(4, 64, device="cuda")
        a, _ = blk.step(u, s_k)
        b, _ = pure.step(u, s_p)
        assert (a - b).abs().max() <= 1e-4
