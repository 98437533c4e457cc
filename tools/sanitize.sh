#!/usr/bin/env bash
# Run fastnn's kernel tests against a sanitizer build, to catch invalid reads and writes.
#
#   tools/sanitize.sh [asan|valgrind] [pytest arguments...]
#
# asan (default): copies the working tree to a scratch directory (your build/ and installed
#   package are left alone), builds the kernels there with FASTNN_DEBUG=1 (-O0 -g, Cython bounds
#   and wraparound checks on) plus -fsanitize=address,undefined, and runs the kernel tests with
#   libasan preloaded into python. Any invalid read or write, use after free, or undefined
#   behaviour (signed overflow, misaligned access, bad shift, ...) aborts the run with a report.
#   Leak checking is off: CPython itself does not free everything at exit.
# valgrind: the same scratch copy built with FASTNN_DEBUG=1 only, the tests run under
#   memcheck (slow: give it a short test selection). Valgrind hides AVX-512 from the program, so
#   the AVX2 GEMM path is what it checks.
#
# The default test selection is every kernel test; pass pytest arguments to choose others, e.g.
#   tools/sanitize.sh asan tests/kernels/test_gemm.py -k avx2
# SANITIZE_DIR=dir reuses a scratch directory (and its build) between runs.
# Exit status: 0 when the tests pass with no sanitizer report.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
mode=asan
if [[ $# -gt 0 && ( $1 == asan || $1 == valgrind ) ]]; then
    mode=$1
    shift
fi
python=${PYTHON:-python3}
work=${SANITIZE_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/fastnn-sanitize.XXXXXX")}
mkdir -p "$work"
echo "sanitize: $mode build in $work"

# The working tree as it is (tracked and new files, not what .gitignore names).
(cd "$root" && git ls-files -z --cached --others --exclude-standard) |
    while IFS= read -r -d '' file; do
        if [[ -f $root/$file ]]; then
            mkdir -p "$work/$(dirname "$file")"
            cp -p "$root/$file" "$work/$file"
        fi
    done

cd "$work"
export FASTNN_DEBUG=1
if [[ $mode == asan ]]; then
    export CFLAGS="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
    export LDFLAGS="-fsanitize=address,undefined"
fi
"$python" setup.py -q build_ext --inplace -j 2 >build.log 2>&1 || { tail -40 build.log; exit 1; }

if [[ $# -eq 0 ]]; then
    set -- tests/kernels tests/backends/test_cpu_arguments.py tests/model/test_determinism.py \
        -k "not training and not omp_num_threads"
fi
# the copy, not an installed fastnn, for this process and the tests' subprocesses
export PYTHONPATH=$work${PYTHONPATH:+:$PYTHONPATH}
pytest_args=(-m pytest -q -p no:cacheprovider -x "$@")

status=0
if [[ $mode == asan ]]; then
    # Reports go to files as well as stderr: pytest captures stderr, and a process the
    # sanitizer stops never prints what was captured.
    reports=$work/sanitizer-report
    rm -f "$reports".*
    export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:halt_on_error=1:detect_stack_use_after_return=1:strict_string_checks=1:log_path=$reports
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:log_path=$reports
    runtime=$(${CC:-gcc} -print-file-name=libasan.so)
    LD_PRELOAD=$runtime "$python" -c "import fastnn, sys; assert fastnn.__file__.startswith('$work'), fastnn.__file__"
    echo "sanitize: LD_PRELOAD=$runtime"
    LD_PRELOAD=$runtime "$python" "${pytest_args[@]}" || status=$?
    if compgen -G "$reports.*" >/dev/null; then
        cat "$reports".*
        echo "sanitize: the sanitizers reported errors (above; files $reports.*)"
        exit 1
    fi
else
    export PYTHONMALLOC=malloc  # so memcheck sees Python's own allocations as such
    log=$work/valgrind.log
    valgrind --quiet --errors-for-leak-kinds=none --leak-check=no --num-callers=30 \
        --log-file="$log" "$python" "${pytest_args[@]}" || status=$?
    # CPython and the dynamic loader have known memcheck false positives; what counts is an
    # error whose stack passes through fastnn's compiled code.
    start='^==[0-9]+== (Invalid|Use of|Conditional|Syscall|Mismatched|Source and|Argument)'
    ours=$(awk -v start="$start" '$0 ~ start {if (block ~ /fastnn|_kernels/) n++; block=""}
                {block = block $0 "\n"} END {if (block ~ /fastnn|_kernels/) n++; print n + 0}' "$log")
    echo "sanitize: memcheck reported $(grep -Ec "$start" "$log") errors, $ours in fastnn's code ($log)"
    if [[ $ours -ne 0 ]]; then
        exit 1
    fi
fi
if [[ $status -ne 0 ]]; then
    echo "sanitize: the tests failed (exit status $status)"
    exit "$status"
fi
echo "sanitize: $mode run passed, no invalid reads or writes reported"
