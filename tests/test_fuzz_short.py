"""The short fuzzing run of ``make test`` (``make fuzz`` is the long one).

- Every seed in tests/fuzz/corpus and every past finding in
  tests/fuzz/crashes goes through both decoders, which must agree, and
  through the prefix rule (one byte less is NEED_DATA).
- A hypothesis-driven mutation run over the seeds (structure-aware: sizes,
  var lengths, truncations, bit flips), differential C vs Python.
- When clang is installed: the libFuzzer + ASan/UBSan harness of the C
  decoder for ``UWSGIGW_FUZZ_SECONDS`` (default 8) seconds.
- When atheris is installed: the atheris harness for as long.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from packet_builder import c_unavailable_reason

FUZZ = Path(__file__).resolve().parent / "fuzz"
SECONDS = int(os.environ.get("UWSGIGW_FUZZ_SECONDS", "8"))

pytestmark = pytest.mark.skipif(c_unavailable_reason() is not None,
                                reason=str(c_unavailable_reason()))


@pytest.fixture(scope="module")
def check():
    sys.path.insert(0, str(FUZZ))
    try:
        import fuzz_decoder
    finally:
        sys.path.remove(str(FUZZ))
    return fuzz_decoder.make_check(*fuzz_decoder.backends())


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def test_seed_corpus_is_there():
    assert len(_files(FUZZ / "corpus")) >= 50


@pytest.mark.parametrize("folder", ["corpus", "crashes"])
def test_replay(check, folder):
    for path in _files(FUZZ / folder) if (FUZZ / folder).exists() else []:
        check(path.read_bytes())


SEEDS = [p.read_bytes() for p in _files(FUZZ / "corpus")]

_op = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 1 << 16), st.integers(0, 7)),
    st.tuples(st.just("cut"), st.integers(0, 1 << 16)),
    st.tuples(st.just("size"), st.integers(-8, 8)),
    st.tuples(st.just("len16"), st.integers(0, 1 << 16),
              st.sampled_from([b"\0\0", b"\xff\xff", b"\1\0", b"\0\1", b"\xfe\xff"])),
    st.tuples(st.just("insert"), st.integers(0, 1 << 16), st.binary(min_size=1, max_size=8)),
)


def _apply(data: bytearray, op) -> bytearray:
    kind, *args = op
    if kind == "flip" and data:
        data[args[0] % len(data)] ^= 1 << args[1]
    elif kind == "cut" and data:
        del data[args[0] % len(data):]
    elif kind == "size" and len(data) >= 4:
        size = (int.from_bytes(data[2:4], "little") + args[0]) % 0x10000
        data[2:4] = size.to_bytes(2, "little")
    elif kind == "len16" and len(data) > 6:
        i = 5 + args[0] % (len(data) - 6)
        data[i:i + 2] = args[1]
    elif kind == "insert":
        i = args[0] % (len(data) + 1)
        data[i:i] = args[1]
    return data


@settings(max_examples=int(os.environ.get("UWSGIGW_FUZZ_EXAMPLES", "1500")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(seed=st.sampled_from(SEEDS), limit=st.integers(0, 7),
       ops=st.lists(_op, min_size=1, max_size=5))
def test_mutated_seeds_decode_the_same_in_c_and_python(check, seed, limit, ops):
    data = bytearray(bytes([limit]) + seed[1:])
    for op in ops:
        data = _apply(data, op)
    check(bytes(data))


def test_libfuzzer_short_run(tmp_path):
    clang = shutil.which("clang")
    if not clang:
        pytest.skip("clang not installed (make fuzz installs it)")
    binary = tmp_path / "decoder_fuzzer"
    csrc = FUZZ.parent.parent / "csrc"
    subprocess.run([clang, "-g", "-O1", "-fsanitize=fuzzer,address,undefined",
                    "-fno-sanitize-recover=undefined", "-I", str(csrc),
                    str(FUZZ / "decoder_libfuzzer.c"), str(csrc / "uwsgi_decoder.c"),
                    "-o", str(binary)], check=True, timeout=120)
    work = tmp_path / "corpus"
    work.mkdir()
    run = subprocess.run([str(binary), str(work), str(FUZZ / "corpus"),
                          "-max_total_time=%d" % SECONDS, "-max_len=70000",
                          "-artifact_prefix=%s/" % tmp_path, "-print_final_stats=1"],
                         capture_output=True, text=True, timeout=SECONDS + 120)
    assert run.returncode == 0, run.stderr[-5000:]
    runs = [l for l in run.stderr.splitlines() if "number_of_executed_units" in l]
    print("\nlibFuzzer:", runs[0].split()[-1] if runs else "?", "inputs in", SECONDS, "s")


def test_atheris_short_run(tmp_path):
    try:
        import atheris  # noqa: F401
    except ImportError:
        pytest.skip("atheris not installed (make fuzz installs it)")
    work = tmp_path / "corpus"
    work.mkdir()
    run = subprocess.run([sys.executable, str(FUZZ / "fuzz_decoder.py"), str(work),
                          str(FUZZ / "corpus"), "-max_total_time=%d" % SECONDS,
                          "-max_len=70000", "-artifact_prefix=%s/" % tmp_path,
                          "-print_final_stats=1"],
                         capture_output=True, text=True, timeout=SECONDS + 120)
    assert run.returncode == 0, (run.stdout + run.stderr)[-5000:]
