"""``python -m convbench`` runs the command-line interface, after the process settings that
fair timing needs (before NumPy is imported: see ``process.py``)."""
import sys

from .process import configure_for_benchmarks

configure_for_benchmarks()

from .cli import main  # noqa: E402  (after the settings above)

sys.exit(main())
