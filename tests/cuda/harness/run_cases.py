"""Run every case in kernel_cases.py through the host harness library given as argv[1] (used for the
ThreadSanitizer build, which must run in its own process with libtsan preloaded).
Prints one line per failing case; exits 1 if any failed."""

import sys

# run as a script: its own directory is sys.path[0]
import host_harness
import kernel_cases
from fastnn.backends.numpy import NumpyBackend


def main(library_path):
    library = host_harness.HostLibrary(library_path)
    ref = NumpyBackend()
    failed = 0
    # Small blocks and a capped grid: several blocks and grid-stride loops even on tiny shapes,
    # a block size that is no power of two. (Thread starts are slow under TSan; the real block
    # size of 256 runs in the plain build.)
    for threads, max_blocks in ((5, 3), (16, 8192)):
        backend = host_harness.host_backend(library, threads=threads, max_blocks=max_blocks)
        for case in kernel_cases.CASES:
            problems = kernel_cases.run(case, backend, ref)
            for problem in problems:
                print(f"FAIL {case.__name__} threads={threads}: {problem}")
            failed += bool(problems)
    print(f"harness cases: {len(kernel_cases.CASES) * 2 - failed} ok, {failed} with mismatches")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
