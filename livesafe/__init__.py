"""livesafe: perceptual-hash guard for live video.

The guard's matrix products are tiny (64 x a few hundred); BLAS worker threads
only add contention with the other streams and the codecs, and on a busy
2-core box made hashing 10x slower.  So unless the operator says otherwise,
numpy's BLAS runs single-threaded (this must happen before numpy loads).
"""

import os

for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")
