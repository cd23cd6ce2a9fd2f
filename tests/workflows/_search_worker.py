"""One search worker on a shared study: ``python _search_worker.py STORAGE TRIALS SEED`` (toy model, toy proxy)."""

from __future__ import annotations

import sys

import torch

from _toy_proxy import X, Fidelity, toy_cnn
from modprune.workflows.search import search

if __name__ == "__main__":
    torch.set_num_threads(1)
    storage, trials, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    model = toy_cnn(width=16)
    search(model, Fidelity(model), X, budget="macs=0.3", objective="fidelity", trials=trials, storage=storage,
           study_name="shared", seed=seed)
