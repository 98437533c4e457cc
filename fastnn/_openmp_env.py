"""OpenMP's wait policy, chosen before fastnn's kernels load libgomp (which reads it once).

libgomp's default is to spin for a while (GOMP_SPINCOUNT, 300000 iterations, milliseconds) at
every barrier before sleeping. On a busy machine that is ruinous: a thread of fastnn's team that
the OS has descheduled holds the others spinning on their cores, which takes those cores from
the very process they wait for (at load 28 on the 2-core VM, an MLP-128 fit on 2 threads took
44x the 1-thread time). Sleeping at once (OMP_WAIT_POLICY=passive) fixes that but makes every
parallel region wake a sleeping thread: on a quiet machine batch-1 `predict` of the MLP went
from 10 to 100 us and an MLP-128 epoch got 35% slower. A short spin keeps both: the gaps between
the kernels of one step or one predict are microseconds, shorter than 3000 iterations, while a
descheduled partner costs at most that much spinning. Measured on the 2-core VM, with one
CPU-bound process per core added: 2-thread/1-thread epoch 0.97-1.17 for the four benchmark
workloads; on the quiet machine the same speed as libgomp's default.
So fastnn sets GOMP_SPINCOUNT=3000 unless the user has chosen a wait policy or a spin count.
The variable is inherited by child processes; a libgomp already loaded by another library
before fastnn keeps what it read.
"""

import os

_USER_CHOICE = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
SPIN_COUNT = "3000"

if not any(name in os.environ for name in _USER_CHOICE):
    os.environ["GOMP_SPINCOUNT"] = SPIN_COUNT
