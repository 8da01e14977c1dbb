"""Trains each config of a JSON file ({label: TrainConfig fields}) in turn, in every
process of a torchrun launch (tests/test_distributed.py starts it)."""

import json
import sys
from pathlib import Path

from apical.train import TrainConfig, train

if __name__ == "__main__":
    configs = json.loads(Path(sys.argv[1]).read_text())
    for fields in configs.values():
        train(TrainConfig.from_dict(fields), progress=False)
