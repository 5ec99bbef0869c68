import os
import shutil
import subprocess
import sys

import pytest
import torch

from wskan_ext.cli import build_parser, main
from wskan_ext.zoo import Zoo, load_kan_weights


def _files(root):
    from wskan_ext.zoo.store import content_files

    return content_files(root)


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
    with pytest.raises(SystemExit, match="unknown preset"):
        main(["zoo", "build", "--preset", "nope", "--out", str(tmp_path / "x")])


@pytest.fixture(scope="module")
def small_zoo(tmp_path_factory):
    from wskan_ext.zoo import PRESETS, BuildConfig, build_zoo

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return build_zoo(BuildConfig(**dict(PRESETS["tiny"], size=4, shard_size=2, steps=5, checkpoints=[5],
                                            hidden=[3], prune_samples=32)),
                         str(tmp_path_factory.mktemp("zoo") / "z"), progress=False)
    finally:
        torch.set_num_threads(n)





def test_export_to_pykan_uses_save_pykan_and_prints_its_paths(small_zoo, tmp_path, cli):
    """Issue 14.7: pykan export failed when the parent directory was missing and did not say
    it writes *_cache_data; it now goes through adapters.pykan.save_pykan."""
    out = str(tmp_path / "missing" / "parent" / "m0")
    rc, stdout, err = cli("zoo", "export", small_zoo, "0", "--to", "pykan", "--out", out)
    try:
        import kan  # noqa: F401
    except ImportError:  # without pykan: one line saying how to install it, nothing written
        assert "pykan is not installed" in cli.one_line(rc, err, "zoo export")
        assert not (tmp_path / "missing").exists()
        return
    assert rc == 0, err
    for suffix in ("_config.yml", "_state", "_cache_data"):
        assert os.path.exists(out + suffix) and os.path.realpath(out + suffix) in stdout


def test_export_native_prints_the_path_written(small_zoo, tmp_path, cli):
    out = tmp_path / "sub" / "m.safetensors"
    rc, stdout, _ = cli("zoo", "export", small_zoo, "1", "--out", str(out))
    assert rc == 0 and str(out) in stdout
    assert load_kan_weights(str(out)).equal(Zoo(small_zoo).member(1))


def test_missing_or_incomplete_zoo_is_one_line(small_zoo, tmp_path, cli):
    """Issue 14.5: ``zoo info`` on a missing or incomplete zoo printed a traceback."""
    rc, _, err = cli("zoo", "info", str(tmp_path / "missing_zoo"))
    assert "missing_zoo" in cli.one_line(rc, err, "zoo info") and "not a zoo directory" in err
    inc = shutil.copytree(small_zoo, tmp_path / "inc")
    os.remove(inc / "metadata.jsonl")
    for cmd in (["info", str(inc)], ["export", str(inc), "0", "--out", str(tmp_path / "m")]):
        rc, _, err = cli("zoo", *cmd)
        assert "the build is incomplete" in cli.one_line(rc, err, "zoo " + cmd[0])


def test_unknown_member_id_is_one_line(small_zoo, tmp_path, cli):
    """Issue 14.5: ``zoo export --id 99999`` raised a bare KeyError."""
    rc, _, err = cli("zoo", "export", small_zoo, "99999", "--out", str(tmp_path / "m"))
    line = cli.one_line(rc, err, "zoo export")
    assert "no member with id [99999] (ids run from 0 to 3)" in line and "KeyError" not in line
    assert not (tmp_path / "m").exists()


def test_bad_shard_is_one_line_naming_the_file(small_zoo, tmp_path, cli):
    """Issue 14.5: shards with wrong contents gave ``KeyError: 0`` / ``IndexError`` without
    the file name."""
    root = shutil.copytree(small_zoo, tmp_path / "z")
    p = root / "shards" / "shard-00000.safetensors"
    data = bytearray(p.read_bytes())
    data[-3] ^= 0xFF
    p.write_bytes(bytes(data))
    rc, _, err = cli("zoo", "export", str(root), "0", "--out", str(tmp_path / "m"))
    assert "shard-00000.safetensors" in cli.one_line(rc, err, "zoo export")
    rc, _, err = cli("zoo", "export", str(root), "2", "--out", str(tmp_path / "m2"))  # shard 1 is fine
    assert rc == 0, err


def test_cli_build_with_sparsity_penalty_records_lamb(tmp_path, capsys):
    """``--lamb LOW HIGH`` reaches the manifest and each run's hyperparameters; without it
    neither mentions lamb (zoos built before the option are unchanged)."""
    from wskan_ext.cli import main
    from wskan_ext.zoo import Zoo

    sparse, plain = str(tmp_path / "sparse"), str(tmp_path / "plain")
    assert main(["zoo", "build", "--preset", "tiny", "--lamb", "1e-3", "1e-2", "--out", sparse, "--quiet",
                 "--threads", "1"]) == 0
    assert main(["zoo", "build", "--preset", "tiny", "--out", plain, "--quiet", "--threads", "1"]) == 0
    zs, zp = Zoo(sparse), Zoo(plain)
    assert zs.manifest["config"]["lamb"] == [1e-3, 1e-2] and "lamb" not in zp.manifest["config"]
    lambs = [r["hparams"]["lamb"] for r in zs.metadata]
    assert all(1e-3 <= v <= 1e-2 for v in lambs) and all("lamb" not in r["hparams"] for r in zp.metadata)
    assert main(["zoo", "build", "--preset", "tiny", "--lamb", "1e-2", "1e-3", "--out", str(tmp_path / "bad"),
                 "--quiet"]) == 2
    assert "lamb" in capsys.readouterr().err
