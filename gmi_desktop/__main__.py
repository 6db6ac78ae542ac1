import sys

from gmi_desktop.cli.main import main

sys.exit(main())
