"""Write WORKDIR/report.html for a training workdir (same as ``jaxcnn report``)."""

import sys

from jaxcnn.commands import report

if __name__ == "__main__":
    sys.exit(report.main(sys.argv[1:]))
