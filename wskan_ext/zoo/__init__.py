"""KAN zoos: offline datasets, a batched trainer, labels, a resumable safetensors store.

Typical use::

    from wskan_ext.zoo import BuildConfig, PRESETS, build_zoo, Zoo

    build_zoo(BuildConfig(**PRESETS["demo"]), "demo_zoo")
    zoo = Zoo("demo_zoo")
    w, labels, rows = zoo.load(split="train")   # KANWeights (N, ...), {name: (N,)}, metadata
"""

from .build import PRESETS, BuildConfig, build_zoo, run_hparams, split_of
from .datasets import (ClassificationData, FunctionData, SineData, digits_inr_data, downsample_images,
                       image_coordinates, image_inr_data, load_digits_data, load_idx_data, read_idx)
from .labels import PYKAN_EDGE_THRESHOLD, edge_attribution, evaluate, pruning_masks, psnr
from .store import FORMAT_VERSION, Zoo, ZooFormatError, load_kan_weights, save_kan_weights
from .trainer import RunHParams, TrainResult, diverged_at, init_models, sparsity_penalty, train_batched

__all__ = [
    "PRESETS", "BuildConfig", "build_zoo", "run_hparams", "split_of",
    "ClassificationData", "FunctionData", "SineData", "digits_inr_data", "downsample_images",
    "image_coordinates", "image_inr_data", "load_digits_data", "load_idx_data", "read_idx",
    "PYKAN_EDGE_THRESHOLD", "edge_attribution", "evaluate", "pruning_masks", "psnr",
    "FORMAT_VERSION", "Zoo", "ZooFormatError", "load_kan_weights", "save_kan_weights",
    "RunHParams", "TrainResult", "diverged_at", "init_models", "sparsity_penalty", "train_batched",
]
