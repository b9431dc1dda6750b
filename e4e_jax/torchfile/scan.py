"""The shape of a pickle, read from its opcodes before anything is built: entries, depth, cycles.

Part of `e4e_jax.torchfile` (the bounds: `limits`). `scan` runs the pickle machine on stand-ins:
every object the real unpickler would make is a node, and the node of a container (or of a constructor
call) lists the nodes it holds. From that graph it computes what unpickling and any walk over the result
would cost (the object tree's entries with each shared reference counted at every use, and its depth)
without building one object, so that a few bytes describing 10^9 entries, a 10^5-deep list or a cycle are
refused in time linear in the pickle's length.
"""

from __future__ import annotations

import pickletools
from typing import BinaryIO

from e4e_jax.torchfile.errors import CheckpointError
from e4e_jax.torchfile.limits import refusal

_MARK = -1  # stand-in of a MARK on the simulated stack (node ids are >= 0)
# Opcodes that add what they pop to the object below them on the stack (and leave that object there).
_INTO_OBJECT = {"APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD"}
_PUT = {"PUT", "BINPUT", "LONG_BINPUT"}
_GET = {"GET", "BINGET", "LONG_BINGET"}
_NOTHING = {"PROTO", "FRAME"}


class _Machine:
    """The pickle stack machine on node ids; `children[i]` lists what node i holds (None: nothing)."""

    def __init__(self):
        self.children: list[list[int] | None] = []
        self.stack: list[int] = []
        self.memo: dict[int, int] = {}
        self.dropped: list[int] = []  # popped and discarded: work done all the same

    def new(self, kids: list[int]) -> int:
        self.children.append(kids or None)
        return len(self.children) - 1

    def pop_mark(self) -> list[int]:
        at = len(self.stack) - 1 - self.stack[::-1].index(_MARK)  # ValueError: no MARK (malformed)
        items = self.stack[at + 1 :]
        del self.stack[at:]
        return items

    def pop(self, n: int) -> list[int]:
        if n > len(self.stack) or _MARK in self.stack[len(self.stack) - n :]:
            raise ValueError("unpickling stack underflow")
        items = self.stack[len(self.stack) - n :] if n else []
        del self.stack[len(self.stack) - n :]
        return items

    def add_to_top(self, kids: list[int]) -> None:
        top = self.stack[-1]
        if top == _MARK:
            raise ValueError("unpickling stack underflow")
        if self.children[top] is None:
            self.children[top] = []
        self.children[top].extend(kids)

    def step(self, op: pickletools.OpcodeInfo, arg) -> None:
        name = op.name
        if name == "MARK":
            self.stack.append(_MARK)
        elif name == "POP":
            self.dropped.extend(x for x in self.stack[-1:] if x != _MARK)
            self.stack.pop()
        elif name == "POP_MARK":
            self.dropped.extend(self.pop_mark())
        elif name == "DUP":
            self.stack.append(self.stack[-1])
        elif name in _PUT:
            self.memo[arg] = self.stack[-1]
        elif name == "MEMOIZE":
            self.memo[len(self.memo)] = self.stack[-1]
        elif name in _GET:
            self.stack.append(self.memo[arg])  # KeyError: memo entry never stored (malformed)
        elif name in _INTO_OBJECT:
            self.add_to_top(
                self.pop_mark() if pickletools.markobject in op.stack_before else self.pop(len(op.stack_before) - 1)
            )
        elif name not in _NOTHING:
            kids = self.pop_mark() if pickletools.markobject in op.stack_before else self.pop(len(op.stack_before))
            self.stack.extend(self.new(kids) for _ in op.stack_after)


def _walk(children: list, roots: list[int], cap: int) -> tuple[int, int]:
    """(entries, depth) of the trees below `roots`: every path counted (a shared node at each use), sizes
    saturating at `cap`. Raises ValueError('cycle') if a node holds itself, however indirectly."""
    size, depth = [0] * len(children), [0] * len(children)
    state = bytearray(len(children))  # 0 unseen, 1 on the current path, 2 done
    total, deepest = 0, 0
    for root in roots:
        if state[root] == 0:
            state[root] = 1
            path = [(root, iter(children[root] or ()))]
            while path:
                node, kids = path[-1]
                for kid in kids:
                    if state[kid] == 1:
                        raise ValueError("cycle")
                    if state[kid] == 0:
                        state[kid] = 1
                        path.append((kid, iter(children[kid] or ())))
                        break
                else:
                    path.pop()
                    state[node] = 2
                    held = children[node] or ()
                    size[node] = min(cap, 1 + sum(size[k] for k in held))
                    depth[node] = 1 + max((depth[k] for k in held), default=0)
        total = min(cap, total + size[root])
        deepest = max(deepest, depth[root])
    return total, deepest


def scan(f: BinaryIO, max_entries: int, max_depth: int) -> int:
    """Read one pickle from `f`'s position to its STOP (leaving `f` after it) and check its shape.

    Returns the entries of its object tree (each shared reference counted at every use; objects it
    discards count too). Raises CheckpointError (no path: the caller adds it) if they exceed
    `max_entries`, if objects nest deeper than `max_depth` or hold themselves; EOFError if the pickle
    ends before its STOP; ValueError if it is not a pickle.
    """
    machine = _Machine()
    result = None
    try:
        for op, arg, _ in pickletools.genops(f):
            if op.name == "STOP":
                result = machine.stack.pop()
                break
            machine.step(op, arg)
    except (ValueError, KeyError, IndexError) as e:
        if not f.read(1):
            raise EOFError(f"the pickle ends before its end mark ({e})") from None
        raise ValueError(f"malformed pickle ({type(e).__name__}: {e})") from None
    if result is None:
        raise EOFError("the pickle ends before its end mark")
    roots = [result, *machine.dropped, *(x for x in machine.stack if x != _MARK)]
    try:
        entries, depth = _walk(machine.children, roots, max_entries + 1)
    except ValueError:
        raise CheckpointError(
            refusal("refused: its objects contain themselves (a reference cycle), which no checkpoint of weights holds")
        ) from None
    if entries > max_entries:
        raise CheckpointError(
            refusal(
                f"refused: its object tree has more than {max_entries:,} entries (a shared reference counted "
                "at every use)"
            )
        )
    if depth > max_depth:
        raise CheckpointError(refusal(f"refused: its objects nest {depth} deep, more than {max_depth}"))
    return entries
