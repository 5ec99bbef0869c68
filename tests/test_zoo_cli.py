import os
import subprocess
import sys

import pytest
import torch

from wskan_ext.cli import build_parser, main
from wskan_ext.zoo import Zoo, load_kan_weights


def _files(root):
    out = {}
    for d, _, names in os.walk(root):
        for n in names:
            if n.endswith(".png"):
                continue
            p = os.path.join(d, n)
            out[os.path.relpath(p, root)] = open(p, "rb").read()
    return out


def test_help_texts_have_examples(capsys):
    for argv in (["--help"], ["zoo", "--help"], ["zoo", "build", "--help"], ["zoo", "info", "--help"],
                 ["zoo", "export", "--help"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 0
        out = capsys.readouterr().out
        assert "example" in out and "wskan" in out, argv
    assert main([]) == 2  # no subcommand: usage, exit code 2
    assert "zoo" in build_parser().format_help()


def test_cli_build_info_export_and_torchrun_equals_single_process(tmp_path, capsys):
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # two CPU processes (gloo), started first so that it overlaps the in-process build
    tr = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "wskan_ext.cli", "zoo", "build", "--preset", "tiny", "--out", two, "--quiet"],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["zoo", "build", "--preset", "tiny", "--out", one, "--quiet"]) == 0
    finally:
        torch.set_num_threads(n)
    out, _ = tr.communicate(timeout=240)
    assert tr.returncode == 0, out.decode()[-3000:]
    a, b = _files(one), _files(two)
    assert sorted(a) == sorted(b) and all(a[k] == b[k] for k in a)

    capsys.readouterr()
    assert main(["zoo", "info", one]) == 0
    text = capsys.readouterr().out
    assert "16 members" in text and os.path.getsize(os.path.join(one, "info.png")) > 1000

    zoo = Zoo(one)
    mid = zoo.ids()[0]
    assert main(["zoo", "export", one, str(mid), "--to", "native", "--out", str(tmp_path / "m.safetensors")]) == 0
    assert load_kan_weights(str(tmp_path / "m.safetensors")).equal(zoo.member(mid))
    assert main(["zoo", "export", one, str(mid), "--to", "pykan", "--out", str(tmp_path / "pk")]) == 0
    assert os.path.exists(str(tmp_path / "pk_state")) and os.path.exists(str(tmp_path / "pk_config.yml"))
    with pytest.raises(SystemExit, match="unknown preset"):
        main(["zoo", "build", "--preset", "nope", "--out", str(tmp_path / "x")])
