"""meta.json, a DATA_DIR's index: what its fields may hold. prepare.py writes it, reading.py reads by it; a
hand-edited or damaged one is refused here, naming the first field that is wrong, before anything is read
by it (the files it lists are confined to the folder: folders.confined)."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError

SPLITS = ("train", "val")


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def check_meta(meta: dict, where: Path) -> None:
    """meta.json's fields have the types and ranges the reader relies on, or one line names the first that
    does not: a hand-edited or damaged file is refused before anything is read by it."""

    def bad(field: str, value, expected: str) -> ConfigError:
        return ConfigError(f"{str(where)!r}: {field} is {value!r}, expected {expected}; the data dir is damaged")

    for field in ("vocab_size", "eos_id"):
        if not _is_count(meta.get(field)):
            raise bad(field, meta.get(field), "a non-negative integer")
    if meta.get("dtype") not in ("uint16", "uint32"):
        raise bad("dtype", meta.get("dtype"), "'uint16' or 'uint32'")
    if meta["format"] == 1:
        for field in ("train_tokens", "val_tokens"):
            if not _is_count(meta.get(field)):
                raise bad(field, meta.get(field), "a non-negative integer")
        return
    splits = meta.get("splits")
    if not isinstance(splits, dict) or any(not isinstance(splits.get(s), dict) for s in SPLITS):
        raise bad("splits", splits, f"an object with {' and '.join(SPLITS)}")
    for split in SPLITS:
        shards = splits[split].get("shards")
        if not isinstance(shards, list) or not all(isinstance(x, dict) for x in shards):
            raise bad(f"splits.{split}.shards", shards, "a list of shard entries")
        for i, shard in enumerate(shards):
            at = f"splits.{split}.shards[{i}]"
            if not _is_count(shard.get("tokens")):
                raise bad(f"{at}.tokens", shard.get("tokens"), "a non-negative integer")
            sha = shard.get("sha256")
            if not (isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)):
                raise bad(f"{at}.sha256", sha, "the shard's SHA-256 (64 hex digits): every shard has one")
            if "max_id" in shard and not (isinstance(shard["max_id"], int) and shard["max_id"] >= -1):
                raise bad(f"{at}.max_id", shard["max_id"], "an integer")
