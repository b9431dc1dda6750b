"""How much one checkpoint may make: the bounds of the safe reader, and the per-file budget that enforces them.

Part of `e4e_jax.torchfile`. A pickle is a program: a few bytes of it can describe an object tree of
10^9 entries (a list of ten references to a list of ten references to ... shares one object at every
level), a list nested 10^5 deep, a cycle, or call a constructor that allocates GBs (``bytes(10**10)``).
Every pickle is scanned before it is unpickled (`scan`) and every allocation the allow-listed
constructors make is charged to the file's `Budget`; whatever passes a bound is refused with one
`CheckpointError` naming the file and the bound.

The bounds are far above what real checkpoints need. Measured on files in the official formats: an
official e4e `.pt` (IR-SE50 encoder, a rosinality decoder, `opts` a flat dict of ~50 options) holds
~15,000 entries nested 7 deep and makes its own size (its storages); a whole `torch.save`d module with
an Adam state ~200 entries per module, 17 deep; an NVlabs-style network pickle (G, D and G_ema of
~130 persistent modules each) ~34,000 entries, 33 deep.
"""

from __future__ import annotations

from e4e_jax.torchfile.errors import CheckpointError

# Objects inside objects (the depth of the object tree): recursive readers of the result (json, repr,
# the converters' walks) stay far from Python's recursion limit.
MAX_NESTING = 200
# Entries of a file's object tree, a shared reference counted at every place it is used: the work any walk
# over the result (a JSON dump of opts, a repr, a hash of a key) can take.
MAX_ENTRIES = 2_000_000
# Opcodes of a file's pickles (real pickles use 1 to 1.5 per entry): bounds the scan itself, which reads
# every opcode in Python (~1 us each) before the C unpickler runs.
MAX_OPCODES = 2 * MAX_ENTRIES
# Bytes a file may make (storages read, tensors copied or widened, containers, bytes and arrays its
# constructors build): a floor, plus this many times the file's own size.
MADE_BYTES_FLOOR = 256 << 20
MADE_BYTES_PER_FILE_BYTE = 8
# Bytes charged per item of a container a constructor builds (one pointer).
ITEM_BYTES = 8
# torch.save bytes embedded in torch.save bytes ... (NVlabs pickles nest once).
MAX_EMBEDDED = 4

WHERE = "e4e_jax/torchfile/limits.py"  # named in refusals: where a bound is set


def refusal(what: str) -> str:
    """The end of every refusal: the file is not a real checkpoint, and where the bound lives."""
    return f"{what}; no real checkpoint comes near this bound ({WHERE}): the file is malformed or hostile"


class Budget:
    """The bytes one file may still make; `charge` refuses (CheckpointError) what would exceed them."""

    __slots__ = ("limit", "made")

    def __init__(self, file_bytes: int):
        self.limit = MADE_BYTES_FLOOR + MADE_BYTES_PER_FILE_BYTE * max(0, int(file_bytes))
        self.made = 0

    def charge(self, nbytes: int, what: str) -> None:
        """Account for `nbytes` about to be allocated by `what` (before allocating them)."""
        self.made += max(0, int(nbytes))
        if self.made > self.limit:
            raise CheckpointError(
                refusal(
                    f"refused: {what} would make the bytes built from this file exceed {self.limit:,} "
                    f"({MADE_BYTES_FLOOR >> 20} MiB + {MADE_BYTES_PER_FILE_BYTE}x its size)"
                )
            )
