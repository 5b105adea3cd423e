#!/usr/bin/env python3
"""Checks that mortar's layers point one way; exits 1 naming each offending edge.

1. Crates (from `cargo metadata`, normal and build dependencies): each crate of the host depends
   only on the crates below it, in this order:

       mortar-pb <- mortar-abi (the host <-> module contract) <- mortar-telemetry <- mortar-backends
                 <- mortar-cluster <- mortar-runtime | mortar-gateway <- mortar-node <- mortar-cli

   and the SDK, `mortar` (with `mortar-macros`), sits on pb and the abi beside the host: no crate of
   the host depends on it (`mortar-backends` only optionally, for its conformance suites written
   against the SDK), and `mortar-node` and above may. `mortar-gateway` and `mortar-runtime` never
   depend on each other, `mortar-cluster` on neither, and only `mortar-node` (and what is above it:
   the CLI, the tests) names both. A module crate (modules/*) depends on the SDK and pb only.
2. Modules inside each crate: no two top-level modules of a crate's `src/` name each other through
   `crate::`, directly or around a longer cycle (the crate root, `lib.rs`, is not counted: it is
   the layer above its modules).

Usage: scripts/check-layers.py (from anywhere in the repo). Run by .ci/run.
"""

import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# What the host builds on, and what module authors see.
ABI = {"mortar-pb", "mortar-abi"}
SDK = {"mortar-pb", "mortar", "mortar-macros"}
# Crate -> the mortar crates it may depend on (optional ones: OPTIONAL).
ALLOWED = {
    "mortar-pb": set(),
    "mortar-macros": set(),
    "mortar-abi": {"mortar-pb"},
    "mortar": {"mortar-pb", "mortar-abi", "mortar-macros"},
    "mortar-telemetry": ABI,
    "mortar-backends": ABI | {"mortar-telemetry"},
    "mortar-cluster": ABI | {"mortar-telemetry", "mortar-backends"},
    "mortar-runtime": ABI | {"mortar-telemetry", "mortar-backends", "mortar-cluster"},
    "mortar-gateway": ABI | {"mortar-telemetry", "mortar-backends", "mortar-cluster"},
    "mortar-node": ABI
    | SDK
    | {"mortar-telemetry", "mortar-backends", "mortar-cluster", "mortar-runtime", "mortar-gateway"},
}
# Crate -> the mortar crates it may name behind a feature (never in a default build).
OPTIONAL = {"mortar-backends": {"mortar"}}
# Crates that may name both the gateway and the runtime (the composition root and above).
ABOVE_NODE = {"mortar-node", "mortar-cli", "mortar-testing", "mortar-tests", "mortar-fuzz"}


def metadata():
    out = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--no-deps", "--offline"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout
    return json.loads(out)["packages"]


def crate_problems(packages):
    problems = []
    for package in packages:
        name = package["name"]
        deps = {
            dep["name"]
            for dep in package["dependencies"]
            if dep.get("kind") in (None, "build")
            and dep["name"].startswith("mortar")
            and not (dep.get("optional") and dep["name"] in OPTIONAL.get(name, set()))
        }
        relative = os.path.relpath(package["manifest_path"], ROOT)
        if relative.startswith("modules/"):
            for dep in sorted(deps - SDK - {name}):
                problems.append(f"crate {name} (a module) depends on {dep}: modules see only the SDK")
            continue
        if name in ALLOWED:
            for dep in sorted(deps - ALLOWED[name]):
                problems.append(f"crate {name} depends on {dep}, which is not below it")
        if {"mortar-gateway", "mortar-runtime"} <= deps and name not in ABOVE_NODE:
            problems.append(f"crate {name} names both mortar-gateway and mortar-runtime: only mortar-node joins them")
    return problems


def crate_sources(packages):
    for package in packages:
        src = os.path.join(os.path.dirname(package["manifest_path"]), "src")
        if os.path.isdir(src):
            yield package["name"], src


def module_edges(src):
    """Top-level modules of `src` and the edges (a, b): module a names crate::b."""
    modules = {
        entry[:-3] if entry.endswith(".rs") else entry
        for entry in os.listdir(src)
        if entry not in ("lib.rs", "main.rs") and (entry.endswith(".rs") or os.path.isdir(os.path.join(src, entry)))
    }
    edges = {}
    for module in modules:
        paths = [os.path.join(src, module + ".rs")] if os.path.isfile(os.path.join(src, module + ".rs")) else []
        for directory, _, files in os.walk(os.path.join(src, module)):
            paths += [os.path.join(directory, file) for file in files if file.endswith(".rs")]
        for path in paths:
            text = open(path, encoding="utf-8").read().split("#[cfg(test)]")[0]
            text = re.sub(r"//[^\n]*", "", text)
            named = set(re.findall(r"\bcrate::([a-z_]+)", text))
            for group in re.findall(r"use crate::\{(.*?)\};", text, re.S):
                depth, token, items = 0, "", []
                for ch in group:
                    depth += ch == "{"
                    depth -= ch == "}"
                    if ch == "," and depth == 0:
                        items.append(token)
                        token = ""
                    else:
                        token += ch
                items.append(token)
                named |= {m.group(1) for m in (re.match(r"\s*([a-z_]+)", it) for it in items) if m}
            for other in named & modules - {module}:
                edges.setdefault((module, other), os.path.relpath(path, ROOT))
    return modules, edges


def cycle_problems(crate, src):
    modules, edges = module_edges(src)
    graph = {module: {b for (a, b) in edges if a == module} for module in modules}
    problems, state = [], {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycle = path[path.index(nxt):] + [nxt]
                where = ", ".join(edges[(a, b)] for a, b in zip(cycle, cycle[1:]))
                problems.append(f"modules of {crate} form a cycle: {' -> '.join(cycle)} ({where})")
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for module in sorted(modules):
        if module not in state:
            visit(module, [module])
    return problems


def main():
    packages = metadata()
    problems = crate_problems(packages)
    for crate, src in crate_sources(packages):
        problems += cycle_problems(crate, src)
    for problem in problems:
        print(f"check-layers: {problem}", file=sys.stderr)
    if problems:
        sys.exit(1)
    print("check-layers: crates point one way, and no crate's modules form a cycle")


if __name__ == "__main__":
    main()
