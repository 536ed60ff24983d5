"""`prunekit cache`: list or clear the converted models prunekit keeps."""

from __future__ import annotations

from prunekit.commands.common import (
    print_result,
)
from prunekit.errors import ComputationError
from prunekit.models.cache import cache_entries, cache_root, clear_cache


def cmd_cache(args) -> int:
    if args.clear:
        cleared = clear_cache()
        root = cache_root()
        lines = [f"removed {cleared.freed / 2**20:.0f} MiB ({len(cleared.removed)} entries) from {root}"]
        lines += [f"kept {path}: not an entry prunekit finished writing" for path in cleared.foreign]
        payload = {
            "root": str(root),
            "freed_bytes": cleared.freed,
            "removed": [str(p) for p in cleared.removed],
            "kept": [str(p) for p in cleared.foreign],
            "failed": [{"path": str(p), "error": why} for p, why in cleared.failed],
        }
        print_result(args, payload, lines)
        if cleared.failed:
            path, why = cleared.failed[0]
            more = f" and {len(cleared.failed) - 1} more" if len(cleared.failed) > 1 else ""
            raise ComputationError(f"could not remove {path}{more} ({why}); check its permissions and run prunekit cache --clear again")
        return 0
    listing = cache_entries()
    lines = [f"{size / 2**20:8.0f} MiB  {path}" for path, size in listing.entries]
    lines += [f"    kept  {path} (not prunekit's, or unfinished: --clear leaves it)" for path in listing.foreign]
    lines.append(f"{listing.bytes / 2**20:8.0f} MiB in {listing.root} (prunekit cache --clear removes it; PRUNEKIT_CACHE moves it)")
    payload = {
        "root": str(listing.root),
        "entries": [{"path": str(p), "bytes": s} for p, s in listing.entries],
        "bytes": listing.bytes,
        "kept": [str(p) for p in listing.foreign],
    }
    return print_result(args, payload, lines)


def register(sub) -> None:
    cache = sub.add_parser("cache", help="list (or --clear) the converted models prunekit keeps, with their sizes")
    cache.add_argument("--clear", action="store_true", help="remove every cached model (they are converted again when needed)")
    cache.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout")
    sub.choices["cache"].set_defaults(func=cmd_cache)
