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

# Opcodes that add what they pop to the object below them on the stack (and leave that object there).
_INTO_OBJECT = {"APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD"}
_PUT = {"PUT", "BINPUT", "LONG_BINPUT"}
_GET = {"GET", "BINGET", "LONG_BINGET"}
_SAME = {"MARK", "POP", "POP_MARK", "DUP", "MEMOIZE", "STOP"}  # their own action
_NOTHING = {"PROTO", "FRAME"}
_TO_MARK = -1  # pops: everything above the last MARK, and the MARK


def _action(op: pickletools.OpcodeInfo) -> tuple[str, int, int]:
    """(action, objects popped or _TO_MARK, objects pushed) of an opcode, from pickletools' stack effects."""
    name = op.name
    for names, action in ((_SAME, name), (_PUT, "PUT"), (_GET, "GET"), (_NOTHING, "NOTHING")):
        if name in names:
            return action, 0, 0
    marked = pickletools.markobject in op.stack_before
    pops = _TO_MARK if marked else len(op.stack_before)
    if name in _INTO_OBJECT:  # the object added to stays: it is not popped
        return "INTO", pops if marked else pops - 1, 0
    return "MAKE", pops, len(op.stack_after)


_ACTIONS = {op.code: _action(op) for op in pickletools.opcodes}


class _TooMany(Exception):
    """More objects than the entry bound allows: each one is an entry at least once."""


class _Machine:
    """The pickle stack machine on node ids (as CPython's: an object stack and a stack of marks, each
    mark the object stack's length when it was set); `children[i]` lists what node i holds (None:
    nothing). Every step takes time proportional to what it pops."""

    def __init__(self, max_nodes: int):
        self.children: list[list[int] | None] = []
        self.stack: list[int] = []
        self.marks: list[int] = []
        self.memo: dict[int, int] = {}
        self.dropped: list[int] = []  # popped and discarded: work done all the same
        self.max_nodes = max_nodes

    def top(self) -> int:
        if len(self.stack) <= (self.marks[-1] if self.marks else 0):
            raise ValueError("unpickling stack underflow")
        return self.stack[-1]

    def pop(self, n: int) -> list[int]:
        if n == _TO_MARK:
            at = self.marks.pop()  # IndexError: no MARK (malformed)
        elif len(self.stack) - n < (self.marks[-1] if self.marks else 0):
            raise ValueError("unpickling stack underflow")
        else:
            at = len(self.stack) - n
        items = self.stack[at:]
        del self.stack[at:]
        return items

    def step(self, code: str, arg) -> None:
        action, pops, pushes = _ACTIONS[code]
        if action == "MAKE":
            kids = self.pop(pops) if pops else None
            for _ in range(pushes):
                self.children.append(kids)
                self.stack.append(len(self.children) - 1)
            if len(self.children) > self.max_nodes:
                raise _TooMany
        elif action == "PUT":
            self.memo[arg] = self.top()
        elif action == "GET":
            self.stack.append(self.memo[arg])  # KeyError: memo entry never stored (malformed)
        elif action == "INTO":
            kids = self.pop(pops)  # a fresh list: extended in place by later additions
            top = self.top()
            if self.children[top] is None:
                self.children[top] = kids
            else:
                self.children[top].extend(kids)
        elif action == "MARK":
            self.marks.append(len(self.stack))
        elif action == "POP":
            if self.marks and self.marks[-1] == len(self.stack):
                self.marks.pop()
            else:
                self.dropped.extend(self.pop(1))
        elif action == "POP_MARK":
            self.dropped.extend(self.pop(_TO_MARK))
        elif action == "DUP":
            self.stack.append(self.top())
        elif action == "MEMOIZE":
            self.memo[len(self.memo)] = self.top()


def _walk(children: list, roots: list[int], cap: int) -> tuple[int, int]:
    """(entries, depth) of the trees below `roots`: every path counted (a shared node at each use), sizes
    saturating at `cap`. Raises ValueError('cycle') if a node holds itself, however indirectly."""
    size, depth = [1] * len(children), [1] * len(children)
    state = bytearray(2 if kids is None else 0 for kids in children)  # 0 unseen, 1 on the path, 2 done
    for root in roots:
        if state[root] == 0:
            state[root] = 1
            path = [(root, iter(children[root]))]
            while path:
                node, kids = path[-1]
                for kid in kids:
                    if state[kid] != 2:
                        if state[kid] == 1:
                            raise ValueError("cycle")
                        state[kid] = 1
                        path.append((kid, iter(children[kid])))
                        break
                else:
                    path.pop()
                    state[node] = 2
                    total, deepest = 1, 0
                    for kid in children[node]:
                        total += size[kid]
                        deepest = max(deepest, depth[kid])
                    size[node], depth[node] = min(cap, total), 1 + deepest
    return min(cap, sum(size[r] for r in roots)), max((depth[r] for r in roots), default=0)


def _too_many(max_entries: int) -> CheckpointError:
    return CheckpointError(
        refusal(
            f"refused: its object tree has more than {max_entries:,} entries (a shared reference counted at every use)"
        )
    )


def scan(f: BinaryIO, max_entries: int, max_opcodes: int, max_depth: int) -> tuple[int, int]:
    """Read one pickle from `f`'s position to its STOP (leaving `f` after it) and check its shape.

    Returns (entries, opcodes): the entries of its object tree (each shared reference counted at every
    use; objects it discards count too) and its opcodes. Raises CheckpointError (no path: the caller adds
    it) if either exceeds its bound, if objects nest deeper than `max_depth` or hold themselves;
    EOFError if the pickle ends before its STOP; ValueError if it is not a pickle.
    """
    machine = _Machine(max_entries)
    result, opcodes = None, 0
    try:
        for op, arg, _ in pickletools.genops(f):
            opcodes += 1
            if opcodes > max_opcodes:
                raise CheckpointError(refusal(f"refused: its pickles hold more than {max_opcodes:,} opcodes"))
            if op.code == ".":  # STOP
                (result,) = machine.pop(1)
                break
            machine.step(op.code, arg)
    except _TooMany:
        raise _too_many(max_entries) from None
    except (ValueError, KeyError, IndexError) as e:
        if not f.read(1):
            raise EOFError(f"the pickle ends before its end mark ({e})") from None
        raise ValueError(f"malformed pickle ({type(e).__name__}: {e})") from None
    if result is None:
        raise EOFError("the pickle ends before its end mark")
    try:
        entries, depth = _walk(machine.children, [result, *machine.dropped, *machine.stack], max_entries + 1)
    except ValueError:
        raise CheckpointError(
            refusal("refused: its objects contain themselves (a reference cycle), which no checkpoint of weights holds")
        ) from None
    if entries > max_entries:
        raise _too_many(max_entries)
    if depth > max_depth:
        raise CheckpointError(refusal(f"refused: its objects nest {depth} deep, more than {max_depth}"))
    return entries, opcodes
