import pytest

from configs import Config, ConfigError, load_config


def test_default_profile_loads_typed():
    cfg = load_config("default")
    assert isinstance(cfg, Config)
    assert cfg.vision.image_size == 64 and isinstance(cfg.cubing.target_len, float)


def write(tmp_path, text):
    p = tmp_path / "p.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("text,names", [
    ("temporal:\n  d_stat: 8\n", "temporal.d_stat"),
    ("colour: red\n", "colour"),
    ("temporal:\n  d_state: eight\n", "temporal.d_state"),
    ("temporal:\n  d_state: 2.5\n", "temporal.d_state"),
    ("temporal:\n  d_state: true\n", "temporal.d_state"),
    ("temporal:\n  d_state: -4\n", "temporal.d_state"),
    ("cubing:\n  min_len: 9\n  max_len: 4\n", "cubing.min_len"),
    ("cubing:\n  target_len: 1\n", "cubing.target_len"),
    ("cubing: [1, 2]\n", "cubing"),
    ("vision:\n  pool: 3\n", "vision.pool"),
    ("sampler:\n  fps: .nan\n", "sampler.fps"),
])
def test_bad_profiles_name_the_key(tmp_path, text, names):
    with pytest.raises(ConfigError, match=names.replace(".", r"\.").replace("[", r"\[")):
        load_config(write(tmp_path, text))


def test_overrides_and_missing_profile(tmp_path):
    cfg = load_config(write(tmp_path, "seed: 3\n"), overrides={"cubing": {"target_len": 6}})
    assert cfg.seed == 3 and cfg.cubing.target_len == 6.0 and cfg.cubing.min_len == 2
    with pytest.raises(ConfigError, match="no config profile"):
        load_config("no-such-profile")


def test_a_profile_starts_from_its_base(tmp_path):
    """The cluster profile serves the default model (its checkpoint, readers and cubing) with its own runtime."""
    default, cluster = load_config("default"), load_config("cluster")
    assert cluster.checkpoint == default.checkpoint == "default"
    assert cluster.llm == default.llm and cluster.cubing == default.cubing and cluster.answer == default.answer
    assert cluster.runtime.encoder_gpus == 1.0 != default.runtime.encoder_gpus
    assert cluster.server.host == "0.0.0.0"
    (tmp_path / "a.yaml").write_text("base: b.yaml\nseed: 5\n")  # a path is relative to the profile naming it
    (tmp_path / "b.yaml").write_text("base: default\nseed: 4\nsampler:\n  fps: 1.0\n")
    cfg = load_config(tmp_path / "a.yaml")
    assert cfg.seed == 5 and cfg.sampler.fps == 1.0 and cfg.checkpoint == "default"
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="its own base"):
        load_config(tmp_path / "a.yaml")
    with pytest.raises(ConfigError, match="base"):
        load_config(write(tmp_path, "base: [default]\n"))
