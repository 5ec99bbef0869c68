"""Load a pykan KAN, convert it to KANWeights, permute its hidden neurons, and show that
the three agree: pykan's forward, ours, and ours after the permutation."""

import torch

from kan import KAN as PykanKAN
from wskan_ext import as_kan_weights, permute_hidden
from wskan_ext.adapters.pykan import preserve_global_rng, to_pykan
from wskan_ext.kan import random_hidden_permutations


def main() -> None:
    torch.set_default_dtype(torch.float64)
    with preserve_global_rng():
        model = PykanKAN(width=[3, 6, 5, 2], grid=5, k=3, auto_save=False, seed=0)
    g = torch.Generator().manual_seed(0)
    x = 2.5 * torch.randn(256, 3, generator=g)
    model.update_grid_from_samples(x)  # non-uniform grids, as after training

    w = as_kan_weights(model)
    perms = random_hidden_permutations(w, g)
    wp = permute_hidden(w, perms)
    x_far = torch.cat([x, 100 * torch.randn(64, 3, generator=g)])
    with torch.no_grad():
        y_pykan = model(x_far)
        y_ours = w(x_far)
        y_perm = wp(x_far)
        y_back = to_pykan(wp)(x_far)
    print(w)
    print("hidden permutations:", [p.tolist() for p in perms])
    print(f"max |pykan - ours|              = {(y_pykan - y_ours).abs().max():.3e}")
    print(f"max |ours - ours permuted|      = {(y_ours - y_perm).abs().max():.3e}")
    print(f"max |pykan - pykan(permuted)|   = {(y_pykan - y_back).abs().max():.3e}")
    x_in = x_far[:, torch.tensor([1, 0, 2])]
    print(f"(input permutation is not a symmetry: max change {(w(x_in) - y_ours).abs().max():.3e})")


if __name__ == "__main__":
    main()
