"""The config a work dir was trained or imported with (its config.json over today's defaults).

    python main.py --config configs/workdir.py:runs/imported --mode train --config.training.n_iters=2000

continues training an imported checkpoint (or any run) with exactly the model, SDE and data it was made with;
every key can still be overridden on the command line.
"""

import json
from pathlib import Path


def get_config(workdir: str = ""):
    """Defaults updated with `workdir`/config.json."""
    from configs.default import config_from_dict

    path = Path(workdir) / "config.json"
    if not workdir or not path.is_file():
        raise FileNotFoundError(
            f"configs/workdir.py needs a work dir with config.json: --config configs/workdir.py:DIR (got {workdir!r})"
        )
    return config_from_dict(json.loads(path.read_text()))
