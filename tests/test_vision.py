import numpy as np
import torch
from transformers import SiglipVisionConfig, SiglipVisionModel

from configs import VisionConfig
from models import VisionEncoder


def test_tiny_tower_shapes_and_pooling():
    torch.manual_seed(0)
    frames = torch.as_tensor(np.random.default_rng(0).integers(0, 256, (2, 48, 80, 3), dtype=np.uint8))
    enc = VisionEncoder(VisionConfig(image_size=32, patch_size=8, hidden_size=32, num_heads=2, pool=1)).eval()
    pooled = VisionEncoder(VisionConfig(image_size=32, patch_size=8, hidden_size=32, num_heads=2, pool=2)).eval()
    pooled.load_state_dict(enc.state_dict())
    with torch.no_grad():
        full, small = enc(frames), pooled(frames)
    assert full.shape == (2, 16, 32) and small.shape == (2, 4, 32)
    # 2x2 average pooling of the 4x4 grid: the top-left output is the mean of patches 0, 1, 4, 5
    assert torch.allclose(small[:, 0], full[:, [0, 1, 4, 5]].mean(1), atol=1e-5)


def test_frames_of_different_sizes_in_one_batch():
    enc = VisionEncoder(VisionConfig(image_size=32, patch_size=8, hidden_size=32, num_heads=2)).eval()
    a = torch.randint(0, 256, (40, 60, 3), dtype=torch.uint8)
    b = torch.randint(0, 256, (32, 32, 3), dtype=torch.uint8)
    with torch.no_grad():
        both = enc([a, b])
        assert torch.allclose(both[1], enc(b[None])[0], atol=1e-5)


def test_loads_a_saved_checkpoint_with_from_pretrained(tmp_path):
    torch.manual_seed(0)
    tower = SiglipVisionModel(SiglipVisionConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1,
                                                 num_attention_heads=2, intermediate_size=64, vision_use_head=False))
    tower.save_pretrained(tmp_path)
    enc = VisionEncoder(VisionConfig(pretrained=str(tmp_path), pool=2, frozen=True)).eval()
    assert enc.grid == 4 and enc.num_tokens == 4
    assert not any(p.requires_grad for p in enc.tower.parameters())
    frames = torch.randint(0, 256, (1, 32, 32, 3), dtype=torch.uint8)
    with torch.no_grad():
        expected = tower.eval()(pixel_values=frames.permute(0, 3, 1, 2).float() / 127.5 - 1).last_hidden_state
        assert torch.allclose(enc(frames), expected.reshape(1, 2, 2, 2, 2, 32).mean((2, 4)).reshape(1, 4, 32), atol=1e-5)
