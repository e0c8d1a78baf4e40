"""Offline stand-in for the pip bootstrap script ansible-test downloads.

ansible-test fetches a get-pip script from its own file host to seed pip into
the virtual environments of `ansible-test sanity --venv`; that host is not
reachable from here. This script does the same job with the standard
library's ensurepip and then installs the packages ansible-test asks for from
the package index. `make sanity` copies it to where ansible-test caches the
download.
"""

import subprocess
import sys

# get-pip options that `pip install` itself does not take
GET_PIP_ONLY = {"--no-setuptools", "--no-wheel"}

subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"], stdout=subprocess.DEVNULL)
args = [arg for arg in sys.argv[1:] if arg not in GET_PIP_ONLY]
subprocess.check_call([sys.executable, "-m", "pip", "install"] + args)
