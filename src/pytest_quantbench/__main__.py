"""``python -m pytest_quantbench``: the quantbench command under its old name, until the next release."""

import sys
import warnings

from quantbench.cli import main

warnings.warn("python -m pytest_quantbench is deprecated: run quantbench (or python -m quantbench)",
              DeprecationWarning, stacklevel=1)
sys.exit(main())
