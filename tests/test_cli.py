import re

from actors.cli import main


def test_clip_prints_every_frame_in_some_cube(capsys):
    assert main(["clip", "--seconds", "10", "--seed", "2"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if re.match(r"\s+\d+\s+\d", line)]
    assert rows, "no cube printed"
    assert [int(r[0]) for r in rows] == list(range(len(rows)))
    assert sum(int(r[3]) for r in rows) == 20  # 10 s at 2 fps, every frame in exactly one cube
