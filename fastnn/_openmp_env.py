"""OpenMP's wait policy, chosen before fastnn's kernels load libgomp (which reads it once).

libgomp's default is to spin for a while (GOMP_SPINCOUNT, 300000 iterations: 7.7 ms on the
2-core VM, where a PAUSE takes 26 ns) at every barrier before sleeping. On a busy machine that
is ruinous when fastnn runs several threads: a thread of fastnn's team that the OS has
descheduled holds the others spinning on their cores, which takes those cores from the very
process they wait for (at load 28 on the 2-core VM, an MLP-128 fit on 2 threads took 44x the
1-thread time). Sleeping at once (OMP_WAIT_POLICY=passive) makes every parallel region wake a
sleeping thread instead: batch-1 `predict` of the MLP went from 10 to 100 us.
fastnn's default thread count already drops to one thread while other processes want the
cores (fastnn._kernels.runtime), so the spin only decides two things: how fast a quiet
machine trains, and what a count the user chose costs on a busy one. Python between the
kernels of a training step leaves the team idle for longer than 77 us (3000 iterations, the
count fastnn set before): the workers slept and woke at every step, and a quiet MLP
784-512-256 epoch took 1.14 s against 0.89 s with libgomp's default (medians of 6 interleaved
runs). 30000 iterations (0.8 ms here) gave 0.90 s, and keep a descheduled partner's cost at a
tenth of libgomp's; with one CPU-bound process per core the default-thread fits stayed within
0.93-1.13x the one-thread fits at 3000, 30000 and 300000 alike.
So fastnn sets GOMP_SPINCOUNT=30000 unless the user has chosen a wait policy or a spin count.
The variable is inherited by child processes; a libgomp already loaded by another library
before fastnn keeps what it read.
"""

import os

_USER_CHOICE = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
SPIN_COUNT = "30000"

if not any(name in os.environ for name in _USER_CHOICE):
    os.environ["GOMP_SPINCOUNT"] = SPIN_COUNT
