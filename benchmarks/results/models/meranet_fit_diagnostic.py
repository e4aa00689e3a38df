"""MERANet's fit on one split of the amplitude-6 synthetic composite (docs/benchmarks-models.md, section 1).

Usage: python meranet_fit_diagnostic.py CACHE (the cache ``synthetic_runs.sh 6`` made). Trains on all
subjects but sub01, 006 and s01 for 60 epochs of batch 16 (Adam 1e-3, no lr decay, no dropout, 32 px),
printing every 10 epochs the training accuracy in evaluation mode and with batch statistics, and the
held-out accuracy. Output of the run cited: meranet_fit_diagnostic.log.
"""
import sys
import time

import numpy as np
import torch

from fr_mer.models import create_model
from fr_mer.pipeline.cache import read_cache


def main(cache_path: str) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cache = read_cache(cache_path, arrays=["clip_frames"])
    clips = torch.from_numpy(cache.arrays["clip_frames"].astype(np.float32))
    labels = torch.tensor(cache.meta["label"])
    test = torch.from_numpy(np.isin(np.array(cache.meta["subject"]), ["sub01", "006", "s01"]))
    model = create_model("meranet", input_size=32, dropout=0.0)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    train = torch.nonzero(~test).flatten()
    order = torch.Generator().manual_seed(0)
    start = time.process_time()
    for epoch in range(1, 61):
        model.train()
        for index in train[torch.randperm(len(train), generator=order)].split(16):
            optimiser.zero_grad()
            model.loss(model({"clip_frames": clips[index]}), labels[index]).backward()
            optimiser.step()
        if epoch % 10:
            continue
        with torch.no_grad():
            model.eval()
            predicted = model({"clip_frames": clips})["logits"].argmax(1)
            model.train()
            batch_stats = model({"clip_frames": clips[train]})["logits"].argmax(1)
        print(epoch, "train acc (eval mode)", (predicted[~test] == labels[~test]).float().mean().item(),
              "train acc (batch stats)", (batch_stats == labels[train]).float().mean().item(),
              "test acc", (predicted[test] == labels[test]).float().mean().item(),
              "cpu", round(time.process_time() - start), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
