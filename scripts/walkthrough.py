#!/usr/bin/env python3
"""Builds the `greet` walkthrough of docs/writing-a-module.md as the page writes it, outside the
repository, and checks that it works: a module crate tested with `mortar_testing`, and a game's own
server binary linking it through `mortar_cli::main()`.

Every code block of the page whose first line is a comment naming a file under `greet/` or
`game-server/` (`# greet/Cargo.toml`, `// greet/src/lib.rs`) is written to that file, beside a
`mortar` link to this checkout, as the page's `../mortar/…` paths expect; a block marked
`(added at its end)` is appended. Then, as the page says:

    cp ../mortar/Cargo.lock . && cargo test        (in greet/: the module's own test)
    cp ../mortar/Cargo.lock . && cargo build       (in game-server/)
    game-server version                            (lists greet among the linked modules)

in debug rather than the page's `--release`, to spare CI a second optimised build. Builds go to
target/walkthrough/ of the checkout (kept, so a second run is quick); the files to a folder of
the system's temp folder, removed at the end.

Usage: scripts/walkthrough.py (from anywhere). Run by scripts/test.sh.
"""

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "writing-a-module.md")
MARK = re.compile(r"^(?:#|//) ((?:greet|game-server)/[\w./-]+)( \(added at its end\))?$")


def files_of(page):
    """(path, text, added) for each marked block of the page, in its order."""
    for block in re.findall(r"^```\w*\n(.*?)^```", page, re.M | re.S):
        mark = MARK.match(block.split("\n", 1)[0])
        if mark:
            yield mark.group(1), block, bool(mark.group(2))


def run(command, cwd, env):
    print(f"walkthrough: {os.path.relpath(cwd, env['WALKTHROUGH'])}$ {' '.join(command)}", flush=True)
    result = subprocess.run(command, cwd=cwd, env=env)
    if result.returncode != 0:
        sys.exit(f"walkthrough: `{' '.join(command)}` failed in {cwd} (exit {result.returncode})")


def main():
    with open(DOC, encoding="utf-8") as doc:
        files = list(files_of(doc.read()))
    wanted = {"greet/Cargo.toml", "greet/build.rs", "greet/proto/greet.proto", "greet/src/lib.rs",
              "greet/tests/greet.rs", "game-server/Cargo.toml", "game-server/src/main.rs"}
    missing = wanted - {path for path, _, _ in files}
    if missing:
        sys.exit(f"walkthrough: {os.path.relpath(DOC, ROOT)} has no block for {', '.join(sorted(missing))}")
    # A fixed folder per checkout (cargo keys its builds of path dependencies by their path, so a
    # second run reuses the first one's), outside the checkout (inside, cargo would take greet for
    # a member of mortar's workspace).
    checkout = hashlib.sha256(ROOT.encode()).hexdigest()[:12]
    work = os.path.join(tempfile.gettempdir(), f"mortar-walkthrough-{checkout}")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    try:
        os.symlink(ROOT, os.path.join(work, "mortar"))
        for path, text, added in files:
            target = os.path.join(work, path)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "a" if added else "w", encoding="utf-8") as out:
                out.write(("\n" if added else "") + text)
        # The walkthrough's project has cargo's default dev profile (full debug info, 5 GB of
        # build output); without debug info and incremental files it builds the same code in a
        # fraction of the disk.
        env = dict(
            os.environ,
            CARGO_TARGET_DIR=os.path.join(ROOT, "target", "walkthrough"),
            CARGO_PROFILE_DEV_DEBUG="false",
            CARGO_INCREMENTAL="0",
            WALKTHROUGH=work,
        )
        for crate in ("greet", "game-server"):
            shutil.copy(os.path.join(ROOT, "Cargo.lock"), os.path.join(work, crate, "Cargo.lock"))
        run(["cargo", "test"], os.path.join(work, "greet"), env)
        run(["cargo", "build"], os.path.join(work, "game-server"), env)
        binary = os.path.join(env["CARGO_TARGET_DIR"], "debug", "game-server")
        version = subprocess.run([binary, "version"], capture_output=True, text=True, check=True).stdout
        if not re.search(r"\bgreet\b", version):
            sys.exit(f"walkthrough: `game-server version` does not list greet:\n{version}")
        print("walkthrough: greet is tested with mortar_testing and linked into game-server", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
