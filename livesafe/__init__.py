"""livesafe: perceptual-hash guard for live video.

The guard's matrix products are tiny (64 x a few hundred); BLAS worker threads
only add contention with the other streams and the codecs: on a busy 2-core
box a 720p hash went from 0.4 ms to 34 ms.  So numpy's BLAS runs
single-threaded in any process that imports livesafe, whichever was imported
first (environment variables alone only work before numpy loads).
"""

from threadpoolctl import threadpool_limits

threadpool_limits(limits=1, user_api="blas")
