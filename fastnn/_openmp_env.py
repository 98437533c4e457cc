"""OpenMP's wait policy, chosen before fastnn's kernels load libgomp (which reads it once).

libgomp's default is to spin for a while (GOMP_SPINCOUNT, 300000 iterations) at every barrier
before sleeping. On a busy machine that is ruinous: a thread of fastnn's team that the OS has
descheduled holds the others spinning on their cores, which takes those cores from the very
process they wait for. Measured on the 2-core VM at load 28: an MLP-128 fit on 2 threads took
44x the 1-thread time with the default spin, 1.1x (or less) with OMP_WAIT_POLICY=passive.
So fastnn asks for the passive policy unless the user has chosen a wait policy or a spin count
(OMP_WAIT_POLICY=active suits a machine kept for one job). The variable is inherited by child
processes; a libgomp already loaded by another library before fastnn keeps what it read.
"""
import os

_USER_CHOICE = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")

if not any(name in os.environ for name in _USER_CHOICE):
    os.environ["OMP_WAIT_POLICY"] = "passive"
