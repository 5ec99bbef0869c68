"""``wskan convert``: KAN -> exported MLP program and MLP state_dict -> KAN, end to end."""

import json
import re

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from wskan_ext import KAN
from wskan_ext.cli import main
from wskan_ext.zoo.store import load_kan_weights, save_kan_weights


@pytest.mark.parametrize("form", ["factored", "merged"])
def test_kan_to_mlp_program_matches_kan(tmp_path, capsys, form):
    w = KAN([3, 4, 2], grid=4, k=3, generator=torch.Generator().manual_seed(0)).weights(detach=True)
    save_kan_weights(str(tmp_path / "kan.safetensors"), w)
    out = tmp_path / "mlp.pt2"
    assert main(["convert", "kan-to-mlp", "--weights", str(tmp_path / "kan.safetensors"), "--form", form,
                 "--out", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["max_rel_error"] < 1e-4
    mlp = torch.export.load(str(out)).module()  # a standard program: no wskan_ext code needed
    x = torch.cat([torch.rand(7, 3) * 2 - 1, 50 * torch.randn(5, 3)])
    ref = w(x)
    assert ((mlp(x) - ref).abs().max() / ref.abs().max().clamp_min(1)).item() < 1e-4


def test_mlp_state_dict_to_kan(tmp_path, capsys):
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2))
    save_file({k: v.contiguous() for k, v in mlp.state_dict().items()}, str(tmp_path / "mlp.safetensors"))
    out = tmp_path / "kan.safetensors"
    assert main(["convert", "mlp-to-kan", "--state-dict", str(tmp_path / "mlp.safetensors"), "--out", str(out)]) == 0
    w = load_kan_weights(str(out))
    x = 10 * torch.randn(20, 3)
    with torch.no_grad():
        assert torch.allclose(w(x), mlp(x), atol=1e-5)
    assert json.loads(capsys.readouterr().out)["widths"] == [3, 5, 2]


def run_cli(argv, capsys):
    """``(status, stdout, error message)`` of ``wskan ARGV``, whichever way the top-level CLI
    reports expected errors (one line and status 2, or the exception itself)."""
    try:
        rc = main(argv)
    except SystemExit as e:
        cap = capsys.readouterr()
        return (e.code if isinstance(e.code, int) else 2), cap.out, str(e.code)
    except (ValueError, TypeError) as e:
        cap = capsys.readouterr()
        return 2, cap.out, str(e)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_convert_errors(tmp_path, capsys):
    save_file({"0.foo": torch.zeros(2)}, str(tmp_path / "bad.safetensors"))
    rc, _, err = run_cli(["convert", "mlp-to-kan", "--state-dict", str(tmp_path / "bad.safetensors"),
                          "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and "'0.foo'" in err and "\n" not in err.strip()
    save_file({"0.bias": torch.zeros(2)}, str(tmp_path / "bad.safetensors"))
    rc, _, err = run_cli(["convert", "mlp-to-kan", "--state-dict", str(tmp_path / "bad.safetensors"),
                          "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and "no '<i>.weight' keys" in err
    rc, _, err = run_cli(["convert", "kan-to-mlp", "--zoo", str(tmp_path), "--out", str(tmp_path / "o.pt2")], capsys)
    assert rc != 0 and "--zoo needs --id" in err
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    rc, _, err = run_cli(["convert", "mlp-to-kan", "--state-dict", str(tmp_path / "junk.safetensors"),
                          "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and "not a readable safetensors file" in err
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------ issue 14
def _save_mlp(mlp, path):
    save_file({k: v.contiguous() for k, v in mlp.state_dict().items()}, str(path))
    return str(path)


def _mlp_to_kan(capsys, tmp_path, state, *extra):
    out = tmp_path / "kan.safetensors"
    if out.exists():
        out.unlink()
    rc, text, err = run_cli(["convert", "mlp-to-kan", "--state-dict", state, "--out", str(out), *extra], capsys)
    return rc, (json.loads(text) if text.strip() else None), err, out


def test_mlp_to_kan_linear_relu_linear_linear_is_exact(tmp_path, capsys):
    """Issue 14 (conversions): the CLI inserted an activation between every pair of layers,
    so ``Sequential(Linear, ReLU, Linear, Linear)`` converted with error 0.64 and exit 0."""
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 4), nn.Linear(4, 2)).eval()
    rc, report, err, out = _mlp_to_kan(capsys, tmp_path, _save_mlp(mlp, tmp_path / "mlp.safetensors"))
    assert rc == 0, err
    assert report["mlp_modules"] == ["Linear", "ReLU", "Linear", "Linear"] and report["widths"] == [3, 5, 2]
    assert report["max_rel_error"] < 1e-6
    w = load_kan_weights(str(out))
    x = 10 * torch.randn(50, 3)
    with torch.no_grad():
        assert ((w(x) - mlp(x)).abs().max() / mlp(x).abs().max()).item() < 1e-6


def test_mlp_to_kan_folds_eval_batchnorm(tmp_path, capsys):
    """Issue 14 (conversions): an eval-mode BatchNorm in between was dropped (error 0.56)."""
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 2))
    for _ in range(5):
        mlp(3 * torch.randn(64, 3) + 1)  # running statistics far from (0, 1)
    mlp.eval()
    rc, report, err, out = _mlp_to_kan(capsys, tmp_path, _save_mlp(mlp, tmp_path / "mlp.safetensors"))
    assert rc == 0, err
    assert report["mlp_modules"] == ["Linear", "BatchNorm1d", "ReLU", "Linear"] and report["max_rel_error"] < 1e-6
    x = 3 * torch.randn(50, 3) + 1
    with torch.no_grad():
        ref = mlp(x)
        assert ((load_kan_weights(str(out))(x) - ref).abs().max() / ref.abs().max()).item() < 1e-5


@pytest.mark.parametrize("state, match", [
    ({"0.weight": (4, 3), "1.weight": (2, 4), "1.bias": (2,), "extra": (1,)}, r"key 'extra'"),
    ({"0.weight": (4, 3), "0.lin.weight": (2, 4)}, r"key '0.lin.weight'"),
    ({"1.weight": (4, 3), "3.weight": (2, 4)}, r"starts at module 1.*--layers"),
    ({"0.weight": (4, 3), "3.weight": (2, 4)}, r"modules 1..2 .*ambiguous.*--layers"),
    ({"0.weight": (4, 3), "2.bias": (2,)}, r"module 2: keys .*neither an nn.Linear"),
    ({"0.weight": (4, 3), "0.bias": (3,)}, r"'0.bias' has shape \(3,\), expected \(4,\)"),
    ({"0.weight": (4, 3), "2.weight": (2, 5)}, r"expects 5 input features.*gives 4"),
])
def test_mlp_to_kan_refuses_gaps_unknown_keys_and_bad_shapes(tmp_path, capsys, state, match):
    """Issue 14 (conversions): gaps in the keys and unknown keys were silently ignored."""
    path = tmp_path / "sd.safetensors"
    save_file({k: torch.randn(*s) for k, s in state.items()}, str(path))
    rc, _, err, out = _mlp_to_kan(capsys, tmp_path, str(path))
    assert rc == 2 and re.search(match, err), err
    assert not out.exists()


def test_mlp_to_kan_layers_spec_resolves_ambiguity(tmp_path, capsys):
    """``--layers`` states what a state dict cannot show: two parameter-free modules in a row
    and a trailing activation."""
    torch.manual_seed(2)
    mlp = nn.Sequential(nn.Linear(3, 5), nn.Dropout(), nn.Tanh(), nn.Linear(5, 2), nn.ReLU()).eval()
    state = _save_mlp(mlp, tmp_path / "mlp.safetensors")
    rc, _, err, _ = _mlp_to_kan(capsys, tmp_path, state)
    assert rc == 2 and "ambiguous" in err
    rc, report, err, out = _mlp_to_kan(capsys, tmp_path, state, "--layers", "linear,dropout,tanh,linear,relu")
    assert rc == 0, err
    assert report["max_rel_error"] < 1e-6 and report["mlp_modules"][-1] == "ReLU"
    x = 5 * torch.randn(40, 3)
    with torch.no_grad():
        assert torch.allclose(load_kan_weights(str(out))(x), mlp(x), atol=1e-5)
    rc, _, err, _ = _mlp_to_kan(capsys, tmp_path, state, "--layers", "linear,relu,linear")
    assert rc == 2 and "module 3" in err
    rc, _, err, _ = _mlp_to_kan(capsys, tmp_path, state, "--layers", "linear,dropout,tanh,linear,swish")
    assert rc == 2 and "('swish'): unknown" in err


@pytest.mark.parametrize("direction", ["kan-to-mlp", "mlp-to-kan"])
def test_convert_exits_nonzero_above_tolerance(tmp_path, capsys, direction):
    """Issue 14 (conversions): nothing checked that the result equals the input. Both
    directions print the max error and fail (status 2, nothing written) above --tol."""
    torch.manual_seed(0)
    if direction == "kan-to-mlp":
        w = KAN([3, 4, 2], grid=4, k=3, generator=torch.Generator().manual_seed(0)).weights(detach=True)
        save_kan_weights(str(tmp_path / "kan.safetensors"), w)
        argv = ["convert", "kan-to-mlp", "--weights", str(tmp_path / "kan.safetensors")]
        out = tmp_path / "mlp.pt2"
    else:
        mlp = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 8), nn.Linear(8, 2))  # composed: rounding
        argv = ["convert", "mlp-to-kan", "--state-dict", _save_mlp(mlp, tmp_path / "mlp.safetensors")]
        out = tmp_path / "k.safetensors"
    rc, text, err = run_cli(argv + ["--out", str(out), "--tol", "1e-15"], capsys)
    assert rc == 2 and "exceeds the tolerance" in err and not out.exists()
    report = json.loads(text)
    assert 0 < report["max_rel_error"] < 1e-4 and report["tolerance"] == 1e-15
    rc, text, err = run_cli(argv + ["--out", str(out)], capsys)  # default tolerance: sqrt(eps)
    assert rc == 0 and out.exists() and json.loads(text)["tolerance"] == pytest.approx(torch.finfo().eps ** 0.5)


def test_kan_to_mlp_refuses_single_kan_file_with_flipped_byte(tmp_path, capsys):
    """Issue 14 (weights): single-KAN files had no checksum; one flipped byte converted with exit 0."""
    w = KAN([3, 4, 2], grid=4, k=3, generator=torch.Generator().manual_seed(0)).weights(detach=True)
    path = tmp_path / "kan.safetensors"
    save_kan_weights(str(path), w)
    data = bytearray(path.read_bytes())
    data[-7] ^= 0x10  # a byte of the last tensor
    path.write_bytes(bytes(data))
    rc, _, err = run_cli(["convert", "kan-to-mlp", "--weights", str(path), "--out", str(tmp_path / "m.pt2")], capsys)
    assert rc == 2 and "checksum mismatch" in err and not (tmp_path / "m.pt2").exists()
