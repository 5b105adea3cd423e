#!/usr/bin/env python3
"""Checks that mortar's layers point one way; exits 1 naming each offending edge.

1. Crates (from `cargo metadata`): a module crate (modules/*) depends on the SDK, never on the
   host; the SDK and mortar-pb depend on no other mortar crate but each other in that order.
2. Folders of the host crate (host/src/*), until they are crates of their own: `gateway` and
   `worker` never name each other, `rpc` (the cluster) names neither, nothing below `node` names
   `node` or `admin`, and no two folders name each other (no cycle).

Usage: scripts/check-layers.py (from anywhere in the repo). Run by .ci/run.
"""

import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Folder -> folders of the host it must never name.
FORBIDDEN = {
    "gateway": {"worker", "node", "admin"},
    "worker": {"gateway", "node", "admin"},
    "rpc": {"gateway", "worker", "node", "admin"},
    "registry": {"gateway", "worker", "rpc", "node", "admin"},
    "session": {"gateway", "worker", "rpc", "node", "admin"},
    "storage": {"gateway", "worker", "rpc", "node", "admin"},
    "cache": {"gateway", "worker", "rpc", "node", "admin"},
    "config": {"gateway", "worker", "rpc", "node", "admin", "registry", "session", "storage", "cache"},
}


def crate_problems():
    out = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--no-deps", "--offline"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout
    problems = []
    for package in json.loads(out)["packages"]:
        name = package["name"]
        deps = {dep["name"] for dep in package["dependencies"] if dep.get("kind") in (None, "build")}
        relative = os.path.relpath(package["manifest_path"], ROOT)
        if relative.startswith("modules/") and "mortar-host" in deps:
            problems.append(f"crate {name} (a module) depends on mortar-host: modules see only the SDK")
        if name in ("mortar", "mortar-macros", "mortar-pb"):
            for dep in sorted(deps & {"mortar-host", "mortar-cli"}):
                problems.append(f"crate {name} depends on {dep}")
        if name == "mortar-pb" and "mortar" in deps:
            problems.append("crate mortar-pb depends on mortar (the SDK): pb is below it")
    return problems


def folder_edges():
    src = os.path.join(ROOT, "host", "src")
    folders = {entry for entry in os.listdir(src) if os.path.isdir(os.path.join(src, entry))}
    edges = {}
    for folder in folders:
        for directory, _, files in os.walk(os.path.join(src, folder)):
            for file in files:
                if not file.endswith(".rs"):
                    continue
                path = os.path.join(directory, file)
                text = open(path, encoding="utf-8").read().split("#[cfg(test)]")[0]
                text = re.sub(r"//[^\n]*", "", text)
                named = set(re.findall(r"crate::([a-z_]+)", text))
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
                for other in named & folders - {folder}:
                    edges.setdefault((folder, other), os.path.relpath(path, ROOT))
    return folders, edges


def folder_problems():
    folders, edges = folder_edges()
    problems = [
        f"host/src/{a} names host/src/{b} ({where}): {a} must not depend on {b}"
        for (a, b), where in sorted(edges.items())
        if b in FORBIDDEN.get(a, set())
    ]
    # Any cycle among the folders.
    graph = {folder: {b for (a, b) in edges if a == folder} for folder in folders}
    state = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycle = path[path.index(nxt):] + [nxt]
                problems.append("host/src folders form a cycle: " + " -> ".join(cycle))
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for folder in sorted(folders):
        if folder not in state:
            visit(folder, [folder])
    return problems


def main():
    problems = crate_problems() + folder_problems()
    for problem in problems:
        print(f"check-layers: {problem}", file=sys.stderr)
    if problems:
        sys.exit(1)
    print("check-layers: crates and host folders point one way")


if __name__ == "__main__":
    main()
