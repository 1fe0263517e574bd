"""``python -m lerobot_kfold``: see :mod:`lerobot_kfold.cli`."""

import sys

from lerobot_kfold.cli import main

if __name__ == "__main__":
    sys.exit(main())
