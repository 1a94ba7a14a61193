import re

from actors.cli import main


def test_clip_prints_every_frame_in_some_cube(capsys):
    assert main(["clip", "--seconds", "10", "--seed", "2"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if re.match(r"\s+\d+\s+\d", line)]
    assert rows, "no cube printed"
    assert [int(r[0]) for r in rows] == list(range(len(rows)))
    assert sum(int(r[3]) for r in rows) == 20  # 10 s at 2 fps, every frame in exactly one cube


def test_eval_streams_the_worlds_it_is_told(tmp_path):
    """--first-world picks the worlds (validation choices are made off the test worlds): the JSON's boundary
    counts are those of evaluating that world directly."""
    import json

    from configs import load_config
    from models.checkpoint import load_model
    from models.synthetic.evaluate import evaluate

    out = tmp_path / "eval.json"
    assert main(["eval", "--worlds", "1", "--first-world", "10100", "--seconds", "30", "--questions", "2",
                 "--methods", "adaptive", "--json", str(out)]) == 0
    got = json.loads(out.read_text())["results"]["adaptive"]
    cfg = load_config("default")
    want = {seed: evaluate(cfg, *load_model(cfg), [seed], 30.0, questions=2, methods=("adaptive",), log=lambda *_: None)["adaptive"]
            for seed in (10100, 10101)}
    assert got == json.loads(json.dumps(want[10100]))
    assert want[10100] != want[10101]  # the check can tell worlds apart
