"""``python -m convbench`` runs the command-line interface, after the process settings that
fair timing needs (before NumPy is imported: see ``process.py``)."""
import sys

from .process import configure_for_benchmarks
from .settings import SettingError

try:
    configure_for_benchmarks()
except SettingError:
    pass  # main() checks every setting first and reports the bad one in one line

from .cli import main  # noqa: E402  (after the settings above)

sys.exit(main())
