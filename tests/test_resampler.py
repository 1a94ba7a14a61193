import torch

from configs import ResamplerConfig
from models import CubeResampler
from models.resampler import sincos_3d


def test_output_shape_and_padding_invariance():
    """A cube resampled alone equals the same cube resampled in a padded batch with a longer one."""
    torch.manual_seed(0)
    r = CubeResampler(64, 4, ResamplerConfig(num_queries=5, num_heads=4, out_dim=96)).eval()
    short, long = torch.randn(3, 16, 64), torch.randn(7, 16, 64)
    with torch.no_grad():
        both = r([short, long])
        alone = r([short])
    assert both.shape == (2, 5, 96)
    assert (both[0] - alone[0]).abs().max() <= 1e-5


def test_position_codes_distinguish_time_and_place():
    pos = sincos_3d(3, 4, 64)
    assert pos.shape == (3 * 16, 64)
    assert torch.unique(pos, dim=0).shape[0] == 48  # every (t, h, w) has its own code
    # t occupies the first quarter of the dims: tokens at the same place in different frames differ only there
    assert torch.equal(pos[0, 16:], pos[16, 16:]) and not torch.equal(pos[0, :16], pos[16, :16])


def test_tokens_depend_on_time_order():
    """Keys carry time, so a cube played backwards gives different tokens."""
    torch.manual_seed(0)
    r = CubeResampler(32, 2, ResamplerConfig(num_queries=2, num_heads=2, out_dim=32)).eval()
    cube = torch.randn(4, 4, 32)
    with torch.no_grad():
        assert (r([cube]) - r([cube.flip(0)])).abs().max() > 1e-4
