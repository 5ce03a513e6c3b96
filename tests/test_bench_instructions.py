"""bench/instructions.py: reading cachegrind's count and turning two processes into one refresh.

The arithmetic is checked on cachegrind's file format, and (where Valgrind is installed) on a real
cachegrind run of two Python processes that differ by a known amount of work."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from tests.conftest import load_bench_script

# the shape of a cachegrind output file (valgrind 3.19, --cache-sim=no), shortened
CACHEGRIND_OUT = """desc: I1 cache:         32768 B, 64 B, 8-way associative
desc: D1 cache:         32768 B, 64 B, 8-way associative
desc: LL cache:         268435456 B, 64 B, direct-mapped
cmd: .venv/bin/python bench/instructions.py --child 2026-10-01 --times 1
events: Ir
fl=./csu/../csu/libc-start.c
fn=__libc_start_main@@GLIBC_2.34
128 2
fn=zlibVersion
0 2
summary: 10195856685
"""


@pytest.fixture(scope="module")
def instr():
    return load_bench_script("instructions")


def test_the_count_is_the_summary_line_not_a_per_function_line(instr):
    assert instr.cachegrind_total(CACHEGRIND_OUT) == 10_195_856_685


def test_a_file_without_a_summary_names_itself(instr):
    with pytest.raises(ValueError, match=r"cg\.out: no 'summary:' line"):
        instr.cachegrind_total(CACHEGRIND_OUT.replace("summary:", "totals:"), "cg.out")


def test_one_refresh_is_the_difference_of_the_two_processes(instr):
    assert instr.one_refresh(10_195_856_685, 15_657_575_036) == 5_461_718_351
    # a twice-refreshing process that counted no more than the once-refreshing one: not the same setup
    with pytest.raises(ValueError, match="not more than"):
        instr.one_refresh(15_657_575_036, 10_195_856_685)


def test_a_real_cachegrind_run_counts_the_extra_work_of_the_second_process(instr, tmp_path):
    """Two Python processes under cachegrind, the second summing a million more numbers: their
    difference is the extra loop, far above the noise of start-up (a few parts in ten thousand).
    Skipped where Valgrind is not installed, except under CI (CI=true), where that is a failure."""
    if shutil.which("valgrind") is None:
        reason = "valgrind not installed (apt-get install valgrind)"
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail(f"CI must run the cachegrind test of bench/instructions.py: {reason}")
        pytest.skip(reason)
    counts = []
    for n in (0, 1_000_000):
        out = tmp_path / f"cg.{n}"
        subprocess.run(["valgrind", "--tool=cachegrind", "--cache-sim=no", f"--cachegrind-out-file={out}",
                        sys.executable, "-S", "-c", f"s = 0\nfor i in range({n}): s += i"],
                       check=True, capture_output=True)
        counts.append(instr.cachegrind_total(out.read_text(), str(out)))
    extra = instr.one_refresh(*counts)
    # CPython spends some tens of instructions per iteration of that loop
    assert 10 * 1_000_000 < extra < 2_000 * 1_000_000, extra
