"""Coverage-guided differential fuzzing of the packet decoders (atheris).

    make fuzz                                       # build.py run, FUZZ_SECONDS each
    python tests/fuzz/fuzz_decoder.py -atheris_runs=1000000 tests/fuzz/corpus

Each input is split into a max_block choice (byte 0) and packet bytes; the
C and Python decoders must agree exactly (same Packet, or same error class
and message) and the C one must never crash. The C decoder is also checked
on every prefix the worker would see (it decodes after each recv()). When
the C fast path is built, its environ (``uwsgigw.wsgi.fastpath.environ_from``)
must equal the Python one (decoder + ``environ.build_environ``), or be
None exactly where Python needs more data or raises.

``UWSGIGW_FUZZ_EXTENSION`` names a ``_cdecoder`` build with libFuzzer
coverage counters (``build.py`` makes one with clang); atheris then steers by
the C code's branches as well as the Python ones. Without atheris this runs a
plain random-mutation loop over the seed corpus (``python
tests/fuzz/fuzz_decoder.py --random [iterations]``), weaker but dependency
free; test_fuzz_short runs that loop and replays tests/fuzz/crashes/.
"""

from __future__ import annotations

import importlib.util
import os
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if importlib.util.find_spec("uwsgigw") is None:  # else the installed one: make test's wheel
    sys.path.insert(0, str(HERE.parent.parent))

LIMITS = (4096, 65535, 0, 1, 100, 8192, -1, 2**70)


def _load_instrumented() -> None:
    """Put the instrumented extension in place of uwsgigw._cdecoder."""
    path = os.environ.get("UWSGIGW_FUZZ_EXTENSION")
    if not path:
        return
    import uwsgigw  # noqa: F401  (the parent package must exist first)
    spec = importlib.util.spec_from_file_location("uwsgigw._cdecoder", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules["uwsgigw._cdecoder"] = module


def backends():
    from uwsgigw.protocol import decoder_py
    from uwsgigw.backend import select
    backend = select("c")  # fuzzing without C is pointless
    environ_c = backend.fastpath.environ_from if backend.fastpath else None
    return backend.decode, decoder_py.decode, environ_c


def python_environ(py_decode, data, max_block: int, base: dict):
    """The Python path's RequestHead of ``data`` (as C's environ_from gives
    it: nread the whole buffer, nothing held), or None where C hands over."""
    from uwsgigw.protocol.errors import ProtocolError
    from uwsgigw.cycle.request import RequestHead
    try:
        packet = py_decode(data, max_block)
        if packet is None:
            return None
        return RequestHead.from_packet(packet, base, len(data), 0)
    except ProtocolError:
        return None


def outcome(decode, data, max_block: int):
    from uwsgigw.protocol.errors import ProtocolError
    try:
        return ("ok", decode(data, max_block))
    except ProtocolError as exc:
        return ("error", type(exc).__name__, str(exc))


def make_check(c_decode, py_decode, environ_c=None):
    from uwsgigw.protocol.environ import base_environ
    base = base_environ(errors=None, file_wrapper=None, multithread=False, multiprocess=True)

    def check(raw: bytes) -> None:
        if not raw:
            return
        max_block, data = LIMITS[raw[0] % len(LIMITS)], raw[1:]
        want = outcome(py_decode, data, max_block)
        got = outcome(c_decode, memoryview(bytearray(data)), max_block)
        if got != want:
            raise AssertionError("backends differ for %r (max_block %d):\n C  %r\n py %r"
                                 % (data[:80], max_block, got, want))
        if got[0] == "ok" and got[1] is not None:
            consumed = got[1].consumed
            if outcome(c_decode, bytearray(data[:consumed - 1]), max_block) != ("ok", None):
                raise AssertionError("a packet minus its last byte is not NEED_DATA: %r"
                                     % data[:80])
        if environ_c is not None and max_block < 2**63:  # the worker caps it at 65535
            want_env = python_environ(py_decode, data, max_block, base)
            got_env = environ_c(data, max_block, base)
            if got_env != want_env:
                raise AssertionError("C and Python environs differ for %r (max_block %d):"
                                     "\n C  %r\n py %r" % (data[:80], max_block, got_env,
                                                           want_env))
    return check


def mutate(data: bytearray, rng: random.Random) -> bytearray:
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(5)
        if op == 0 and data:
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif op == 1 and data:
            del data[rng.randrange(len(data)):]
        elif op == 2 and len(data) >= 4:
            size = (int.from_bytes(data[2:4], "little") + rng.randint(-4, 4)) % 0x10000
            data[2:4] = size.to_bytes(2, "little")  # datasize (after the limit byte)
        elif op == 3 and len(data) > 8:
            i = rng.randrange(5, len(data) - 1)  # a var length somewhere in the block
            data[i:i + 2] = rng.choice([b"\0\0", b"\xff\xff", b"\1\0", b"\0\1"])
        else:
            i = rng.randint(0, len(data))
            data[i:i] = rng.randbytes(rng.randint(1, 6))
    return data


def seeds() -> list[bytes]:
    return [p.read_bytes() for p in sorted((HERE / "corpus").iterdir())]


def random_loop(iterations: int, seed: int = 0) -> int:
    check = make_check(*backends())
    pool = seeds()
    rng = random.Random(seed)
    for _ in range(iterations):
        check(bytes(mutate(bytearray(rng.choice(pool)), rng)))
    return iterations


def main() -> None:
    if sys.argv[1:2] == ["--random"]:
        n = random_loop(int(sys.argv[2]) if len(sys.argv) > 2 else 100_000)
        print("%d inputs, backends agree" % n)
        return
    import atheris
    _load_instrumented()
    with atheris.instrument_imports(include=["uwsgigw"]):
        c_decode, py_decode, environ_c = backends()
    atheris.Setup(sys.argv, make_check(c_decode, py_decode, environ_c))
    atheris.Fuzz()


if __name__ == "__main__":
    main()
