"""Coverage-guided differential fuzzing of the packet decoders (atheris).

    pip install atheris
    python tests/fuzz_decoder.py -atheris_runs=1000000 tests/packets/valid

Each input is split into a max_block choice and packet bytes; the C and
Python decoders must agree exactly (same Packet, or same error class and
message) and the C one must never crash. Not collected by pytest. Without
atheris it runs a plain random-mutation loop over the fixture packets
(``python tests/fuzz_decoder.py [iterations]``), which is weaker but needs
nothing.

For memory errors, also run the C file under ASan/UBSan outside Python (a
driver that copies each input into an exactly-sized malloc), as done when
the decoder was written.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from uwsgigw import decoder_py  # noqa: E402
from uwsgigw.decoder import select  # noqa: E402
from uwsgigw.errors import ProtocolError  # noqa: E402

C_DECODE = select("c").decode  # fuzzing without the C backend is pointless
LIMITS = (4096, 65535, 0, 1, 100, 8192, -1, 2**70)


def outcome(decode, data: bytes, max_block: int):
    try:
        return ("ok", decode(data, max_block))
    except ProtocolError as exc:
        return ("error", type(exc).__name__, str(exc))


def check(raw: bytes) -> None:
    if not raw:
        return
    max_block, data = LIMITS[raw[0] % len(LIMITS)], raw[1:]
    want = outcome(decoder_py.decode, data, max_block)
    got = outcome(C_DECODE, memoryview(bytearray(data)), max_block)
    if got != want:
        raise AssertionError("backends differ for %r (max_block %d):\n C  %r\n py %r"
                             % (data[:80], max_block, got, want))


def _mutate(data: bytearray, rng: random.Random) -> bytearray:
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(4)
        if op == 0 and data:
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif op == 1 and data:
            del data[rng.randrange(len(data)):]
        elif op == 2 and len(data) >= 4:
            size = (int.from_bytes(data[1:3], "little") + rng.randint(-4, 4)) % 0x10000
            data[1:3] = size.to_bytes(2, "little")
        else:
            i = rng.randint(0, len(data))
            data[i:i] = rng.randbytes(rng.randint(1, 6))
    return data


def random_loop(iterations: int) -> None:
    seeds = [p.read_bytes() for p in sorted(Path(__file__).parent.glob("packets/*/*.bin"))]
    rng = random.Random(0)
    for _ in range(iterations):
        data = _mutate(bytearray(rng.choice(seeds)), rng)
        check(bytes([rng.randrange(256)]) + bytes(data))
    print("%d inputs, backends agree" % iterations)


def main() -> None:
    try:
        import atheris
    except ImportError:
        random_loop(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
        return
    atheris.Setup(sys.argv, check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
