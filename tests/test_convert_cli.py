"""``wskan convert``: KAN -> exported MLP program and MLP state_dict -> KAN, end to end."""

import json

import pytest
import torch
from safetensors.torch import save_file

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


def test_convert_errors(tmp_path):
    save_file({"foo": torch.zeros(2)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(SystemExit, match="no '<i>.weight' keys"):
        main(["convert", "mlp-to-kan", "--state-dict", str(tmp_path / "bad.safetensors"), "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit, match="--zoo needs --id"):
        main(["convert", "kan-to-mlp", "--zoo", str(tmp_path), "--out", str(tmp_path / "o.pt2")])
