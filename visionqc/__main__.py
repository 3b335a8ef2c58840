import sys

from visionqc.cli import main

sys.exit(main())
