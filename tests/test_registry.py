"""Architecture families (wskan_ext.registry)."""

import textwrap

import pytest
import torch
from torch import nn

import wskan_ext.registry as registry
from wskan_ext import KAN, KANWeights, as_kan_weights, families, register_family

F64 = torch.float64


class _ToyKAN:
    """A third-party "KAN" object: one layer stored as plain attributes."""

    def __init__(self, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.w = KAN([2, 3], grid=3, k=2, generator=g, dtype=F64).weights(detach=True)


def test_builtin_families_listed():
    names = families()
    for n in ("kan_weights", "native", "pykan", "efficient_kan", "mlp"):
        assert n in names


def test_unknown_object_type_error_names_families():
    with pytest.raises(TypeError) as e:
        as_kan_weights(object())
    msg = str(e.value)
    assert "builtins.object" in msg
    for n in ("native", "pykan", "efficient_kan", "mlp"):
        assert repr(n) in msg
    # a torch module that is no MLP is not claimed by the mlp family
    with pytest.raises(TypeError, match="no registered KAN family"):
        as_kan_weights(nn.Conv2d(1, 1, 3))


def test_family_registered_in_code_is_found():
    toy = _ToyKAN()
    with pytest.raises(TypeError, match="no registered KAN family") as e:
        as_kan_weights(toy)  # negative twin: not found before registration
    assert "'toy'" not in str(e.value)
    register_family("toy", lambda o: isinstance(o, _ToyKAN), lambda o, **kw: o.w)
    try:
        assert "toy" in families()
        assert as_kan_weights(toy) is toy.w
        with pytest.raises(ValueError, match="already registered"):
            register_family("toy", lambda o: False, lambda o: None)
    finally:
        registry.unregister_family("toy")
    assert "toy" not in families()


def test_native_kan_and_kan_weights():
    m = KAN([3, 4, 2], grid=4, k=3, generator=torch.Generator().manual_seed(0), dtype=F64)
    w = as_kan_weights(m)
    assert w.equal(m.weights(detach=True))
    assert as_kan_weights(w) is w


def test_entry_point_family(tmp_path, monkeypatch):
    """A fake installed distribution exposing an entry point in ``wskan_ext.families``."""
    (tmp_path / "fake_wskan_family.py").write_text(textwrap.dedent('''
        def register():
            return ("fake_ep", lambda o: isinstance(o, str) and o == "fake-kan", lambda o, **kw: "converted")
    '''))
    dist = tmp_path / "fake_wskan_family-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fake_wskan_family\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        f"[{registry.ENTRY_POINT_GROUP}]\nfake = fake_wskan_family:register\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_ENTRY_POINTS_LOADED", False)
    try:
        assert "fake_ep" in families()
        assert as_kan_weights("fake-kan") == "converted"
    finally:
        registry._FAMILIES.pop("fake_ep", None)


def _convert_ready():
    try:
        from wskan_ext.convert import mlp_to_kan  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _convert_ready(), reason="wskan_ext.convert.mlp_to_kan not available yet")
@pytest.mark.parametrize("act", [nn.ReLU, nn.Tanh, nn.SiLU])
def test_mlp_family(act):
    torch.manual_seed(0)  # test-only: nn.Linear init
    mlp = nn.Sequential(nn.Linear(3, 8, dtype=F64), act(), nn.Linear(8, 5, dtype=F64), act(), nn.Linear(5, 2, dtype=F64))
    w = as_kan_weights(mlp)
    from wskan_ext.convert import mlp_to_kan

    assert isinstance(w, KANWeights) and w.widths == [3, 8, 5, 2]
    assert w.equal(mlp_to_kan(mlp, route="exact"))
    x = 4 * torch.randn(30, 3, dtype=F64)
    with torch.no_grad():
        assert torch.allclose(w(x), mlp(x), rtol=1e-12, atol=1e-12)


@pytest.mark.skipif(not _convert_ready(), reason="wskan_ext.convert.mlp_to_kan not available yet")
def test_mlp_family_unsupported_module_is_named():
    mlp = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1))
    with pytest.raises((TypeError, ValueError), match="BatchNorm1d"):
        as_kan_weights(mlp)


def test_builtin_families_are_the_declared_entry_points():
    # each family registers itself from its own module; pyproject declares the same entry points
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    declared = project["entry-points"][registry.ENTRY_POINT_GROUP]
    assert sorted(declared.values()) == sorted(registry.BUILTIN_FAMILIES)
    ours = ["kan_weights", "native", "pykan", "efficient_kan", "mlp"]
    assert [n for n in families() if n in ours] == ours  # detection order
