import sys

from cochseg3d.cli import main

sys.exit(main())
