"""Build and run the decoder fuzzers (``make fuzz``; also used by test_fuzz_short).

    python tests/fuzz/build.py corpus            # (re)write the seed corpus
    python tests/fuzz/build.py run SECONDS       # both fuzzers, SECONDS each

Two fuzzers share the input layout (byte 0 picks max_block, the rest is the
packet) and the seed corpus in ``tests/fuzz/corpus``:

1. **libFuzzer + ASan + UBSan** on the C decoder alone
   (``decoder_libfuzzer.c``, built with clang): memory errors, undefined
   behaviour, and the decoder's output contract.
2. **atheris** (``fuzz_decoder.py``): differential, the C decoder through
   cffi against the pure-Python one, which must agree on every input. When
   clang is there, the C extension is rebuilt with
   ``-fsanitize=fuzzer-no-link`` so that atheris is guided by the C code's
   coverage too, not only the Python wrapper's.

New inputs go to ``$FUZZ_WORK/corpus`` (default /tmp/uwsgigw-fuzz), never
into the repository; a crash is written to ``$FUZZ_WORK/crash-*``. Copy a
crash into ``tests/fuzz/crashes/`` (named after what it found): the test
suite replays every file there through both decoders.
"""

from __future__ import annotations

import glob
import hashlib
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CORPUS = HERE / "corpus"
CRASHES = HERE / "crashes"
WORK = Path(os.environ.get("FUZZ_WORK", "/tmp/uwsgigw-fuzz"))
CSRC = REPO / "csrc"


def write_corpus() -> int:
    """Seeds: every packet fixture at two limits, plus mutated packets."""
    sys.path.insert(0, str(REPO / "tests"))
    from fuzz.mutate import hostile_packets, valid

    seeds = []
    for path in sorted(glob.glob(str(REPO / "tests/packets/*/*.bin"))):
        data = Path(path).read_bytes()
        seeds += [b"\0" + data, b"\1" + data]
    rng = random.Random(6)
    seeds += [b"\1" + valid(rng) for _ in range(10)]
    seeds += [bytes([i % 8]) + data for i, (_, data) in enumerate(hostile_packets(rng, 40))]
    if CORPUS.exists():
        shutil.rmtree(CORPUS)
    CORPUS.mkdir(parents=True)
    for seed in seeds:
        (CORPUS / hashlib.sha1(seed).hexdigest()).write_bytes(seed)
    return len(seeds)


def clang() -> str | None:
    return shutil.which(os.environ.get("CLANG", "clang"))


def build_libfuzzer() -> Path:
    out = WORK / "decoder_fuzzer"
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([clang(), "-g", "-O1", "-fsanitize=fuzzer,address,undefined",
                    "-fno-sanitize-recover=undefined", "-I", str(CSRC),
                    str(HERE / "decoder_libfuzzer.c"), str(CSRC / "uwsgi_decoder.c"),
                    "-o", str(out)], check=True)
    return out


def build_instrumented_extension() -> Path:
    """uwsgigw._cdecoder compiled by clang with coverage counters for atheris."""
    target = WORK / "instrumented"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    env = dict(os.environ, CC=clang(), LDSHARED="%s -shared" % clang(),
               CFLAGS="-fsanitize=address,fuzzer-no-link -g -O1")
    code = ("import sys; sys.path.insert(0, %r); from uwsgigw.protocol._decoder_build import _builder; "
            "print(_builder(True).compile(tmpdir=%r))" % (str(REPO), str(target)))
    subprocess.run([sys.executable, "-c", code], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    built = sorted(target.glob("uwsgigw/_cdecoder*.so")) or sorted(target.glob("_cdecoder*.so"))
    if not built:
        raise RuntimeError("instrumented build produced no extension under %s" % target)
    return built[0]


def run(seconds: int) -> int:
    corpus = WORK / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    status = 0
    if clang():
        fuzzer = build_libfuzzer()
        print("== libFuzzer + ASan/UBSan on csrc/uwsgi_decoder.c for %d s" % seconds, flush=True)
        status |= subprocess.run([str(fuzzer), str(corpus), str(CORPUS),
                                  "-max_total_time=%d" % seconds, "-max_len=70000",
                                  "-artifact_prefix=%s/" % WORK, "-print_final_stats=1"],
                                 ).returncode
    else:
        print("clang not found: skipping the libFuzzer build (apt-get install clang)")
    env = dict(os.environ)
    if clang():
        # ASan and libFuzzer's coverage hooks come from atheris' preload
        # library (its docs: "native extension fuzzing").
        import atheris
        env["UWSGIGW_FUZZ_EXTENSION"] = str(build_instrumented_extension())
        env["LD_PRELOAD"] = os.path.join(atheris.path(), "asan_with_fuzzer.so")
        env["ASAN_OPTIONS"] = "detect_leaks=0,allocator_may_return_null=1"
    print("== atheris: C decoder vs Python decoder for %d s%s" % (
        seconds, " (C coverage-instrumented)" if clang() else ""), flush=True)
    status |= subprocess.run([sys.executable, str(HERE / "fuzz_decoder.py"), str(corpus),
                              str(CORPUS), "-max_total_time=%d" % seconds, "-max_len=70000",
                              "-artifact_prefix=%s/" % WORK, "-print_final_stats=1"],
                             env=env).returncode
    if status:
        print("\nfuzzing found a problem: see %s/crash-* and add it to tests/fuzz/crashes/"
              % WORK)
    return status


def main(argv: list[str]) -> int:
    if argv[:1] == ["corpus"]:
        print("wrote %d seeds to %s" % (write_corpus(), CORPUS))
        return 0
    if argv[:1] == ["run"]:
        return run(int(argv[1]) if len(argv) > 1 else 60)
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
