"""The frozen app's entry point: the whole command line (``open`` for the menu, ``watch``, ...)."""

import multiprocessing
import sys

from gmi_desktop.cli.main import main

if __name__ == "__main__":
    multiprocessing.freeze_support()
    sys.exit(main())
