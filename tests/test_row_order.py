"""The same samples give the same figures whatever the order of the cache's rows.

``fr-mer preprocess --jobs N`` writes samples as its workers finish them, and a resumed run
appends, so two caches of the same clips can hold their rows in different orders. The
protocol's samples are taken in the composite list's order or the keys' order instead.
"""
import csv
import json

import numpy as np
import torch

from fr_mer.data import load_dataset
from fr_mer.evaluation import EvalConfig, run_evaluation
from fr_mer.models import model_class
from fr_mer.pipeline.cache import ArraySpec, CacheWriter, read_cache
from fr_mer.pipeline.composite import read_composite_list
from tests.cachefactory import small_composite

RECIPE = model_class("ststnet").recipe.replace(epochs=2, batch_size=16, lr=1e-2)


def reordered_copy(source, out, order):
    """``source``'s samples (metadata and flow) written to ``out`` in the row order ``order``."""
    cache = read_cache(source, arrays=["flow"])
    spec = {"flow": ArraySpec(cache.arrays["flow"].shape[1:], "f4", cache.array_attrs["flow"])}
    columns = ("key", "database", "subject", "clip", "emotion", "label", "onset_frame", "apex_frame",
               "offset_frame", "objective_class")
    with CacheWriter(out, params=cache.params, arrays=spec) as writer:
        for i in order:
            writer.append({name: cache.meta[name][i] for name in columns}, {"flow": cache.arrays["flow"][i]})
    return out


def caches_in_two_orders(tmp_path):
    cache, listing = small_composite(tmp_path, subjects_per_db=2, clips_per_class=2)
    n = len(read_cache(cache).meta["key"])
    shuffled = np.random.default_rng(7).permutation(n)
    return cache, reordered_copy(cache, tmp_path / "shuffled.h5", shuffled), listing


def predictions(folder):
    with open(folder / "predictions.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_the_rows_come_in_the_list_or_key_order_not_the_cache_order(tmp_path):
    cache, shuffled, listing = caches_in_two_orders(tmp_path)
    assert read_cache(cache).meta["key"] != read_cache(shuffled).meta["key"]
    listed = [entry.key for entry in read_composite_list(listing)]
    for path in (cache, shuffled):
        composite = load_dataset(path, {"flow": None}, torch.device("cpu"), composite_list=listing)
        assert composite.keys == listed
        loso = load_dataset(path, {"flow": None}, torch.device("cpu"), protocol="loso", database="samm")
        assert loso.keys == sorted(loso.keys) and len(loso.keys) == 12
    first = load_dataset(cache, {"flow": None}, torch.device("cpu"), protocol="loso", database="samm")
    second = load_dataset(shuffled, {"flow": None}, torch.device("cpu"), protocol="loso", database="samm")
    torch.testing.assert_close(first.inputs["flow"], second.inputs["flow"], rtol=0, atol=0)
    assert torch.equal(first.labels, second.labels)


def test_two_row_orders_give_the_same_predictions(tmp_path):
    cache, shuffled, listing = caches_in_two_orders(tmp_path)
    for protocol, extra in (("composite", {"composite_list": str(listing)}), ("loso", {"database": "casme2"})):
        runs = []
        for name, path in (("sorted", cache), ("shuffled", shuffled)):
            out = tmp_path / f"{protocol}-{name}"
            config = EvalConfig(model="ststnet", recipe=RECIPE, seeds=(0, 1), protocol=protocol, **extra)
            run_evaluation(path, out, config, device=torch.device("cpu"))
            runs.append(out)
        assert predictions(runs[0]) == predictions(runs[1])
        metrics = [json.loads((out / "metrics.json").read_text())["full"] for out in runs]
        assert metrics[0] == metrics[1]
