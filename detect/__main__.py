import sys

from detect.cli.main import main

sys.exit(main())
