"""The shape of the package in numbers, for BUILD_NOTES.md's before/after table (issue 25).

    python tools/structure_stats.py [--root e4e_jax] [--top 5] [--json]

Prints: modules at the package's top level, subpackages, lines of library code, the largest files, the
longest functions (lines from `def` to the end of the body, nested functions counted in their own right),
functions over 80 lines, and the command modules' sizes.
"""

from __future__ import annotations

import argparse
import ast
import json
from pathlib import Path

LONG_FUNCTION = 80  # lines: issue 25's bound for a function outside declarative configs
LONG_COMMAND = 120  # lines: issue 25's bound for a command module


def _functions(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            out.append((f"{path}:{node.name}", node.end_lineno - node.lineno + 1))
    return out


def stats(root: Path, top: int) -> dict:
    files = sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)
    lines = {str(p): len(p.read_text().splitlines()) for p in files}
    funcs = [f for p in files for f in _functions(p)]
    funcs.sort(key=lambda f: -f[1])
    commands = {str(p): lines[str(p)] for p in files if p.parent.name == "commands" and p.name != "__init__.py"}
    return {
        "top_level_modules": sorted(p.name for p in root.glob("*.py") if p.name != "__init__.py"),
        "subpackages": sorted(p.name for p in root.iterdir() if (p / "__init__.py").is_file()),
        "library_lines": sum(lines.values()),
        "largest_files": sorted(lines.items(), key=lambda kv: -kv[1])[:top],
        "longest_functions": funcs[:top],
        "functions_over_80": [f for f in funcs if f[1] > LONG_FUNCTION],
        "commands_over_120": {k: v for k, v in commands.items() if v > LONG_COMMAND},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path("e4e_jax"))
    ap.add_argument("--top", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    s = stats(args.root, args.top)
    if args.json:
        print(json.dumps(s, indent=1))
        return
    print(f"top-level modules ({len(s['top_level_modules'])}): {', '.join(s['top_level_modules'])}")
    print(f"subpackages ({len(s['subpackages'])}): {', '.join(s['subpackages'])}")
    print(f"library lines: {s['library_lines']}")
    print("largest files: " + "; ".join(f"{k} {v}" for k, v in s["largest_files"]))
    print("longest functions: " + "; ".join(f"{k} {v}" for k, v in s["longest_functions"]))
    print(f"functions over {LONG_FUNCTION} lines: {len(s['functions_over_80'])}")
    print(f"command modules over {LONG_COMMAND} lines: {s['commands_over_120']}")


if __name__ == "__main__":
    main()
