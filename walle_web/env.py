"""Tiny typed readers for settings that come from environment variables."""

from __future__ import annotations

import os

import dj_database_url


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from exc


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    return raw.strip().lower() in ("1", "true", "yes", "on")


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def database_from_url(url: str, base_dir: str, pool_size: int = 8) -> dict:
    """Turn `sqlite:///path` or `postgres://user:pw@host:port/name` into a DATABASES entry.

    dj-database-url parses the URL; what is added here is Walle's own: relative SQLite paths
    are relative to the project, SQLite runs in WAL mode with IMMEDIATE transactions, and
    PostgreSQL connections come from a pool of at most `pool_size` per process: Django runs
    each request's sync code on a thread of its own, and with persistent connections
    (`conn_max_age`) every such thread kept one open, so two servers enrolling a few hundred
    devices at once ran PostgreSQL out of connections ("too many clients already").
    """
    scheme = url.partition(":")[0]
    if scheme == "sqlite":
        config = dj_database_url.parse(url)
        # sqlite:///relative/path is relative to the project; sqlite:////abs is absolute.
        name = config["NAME"]
        if not os.path.isabs(name):
            name = os.path.join(base_dir, name)
        return {
            **config,
            "NAME": name,
            # Keep the connection: Channels closes "old" connections around every device
            # message, and reopening SQLite each time cost 17% of the database thread.
            "CONN_MAX_AGE": None,
            # WAL lets the rollout worker and the server read while one writes; a busy timeout
            # turns short write contention into waiting instead of "database is locked".
            "OPTIONS": {
                "timeout": 20,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
        }
    if scheme in ("postgres", "postgresql", "pgsql"):
        config = dj_database_url.parse(url)
        options = config.setdefault("OPTIONS", {})
        # dj-database-url leaves unknown query parameters in OPTIONS: conn_max_age is ours.
        conn_max_age = int(options.pop("conn_max_age", 0))
        if pool_size > 0:
            if conn_max_age:
                raise ValueError(
                    "DATABASE_URL has conn_max_age, which the connection pool replaces: remove "
                    "?conn_max_age=… (the pool keeps connections open and bounds them per "
                    "process with WALLE_DB_POOL_SIZE), or set WALLE_DB_POOL_SIZE=0 to use "
                    "persistent connections without a bound"
                )
            # Waiting up to `timeout` for a free connection is what bounds the process.
            options["pool"] = {"min_size": 1, "max_size": pool_size, "timeout": 30}
        return {**config, "NAME": config["NAME"] or "postgres", "CONN_MAX_AGE": conn_max_age}
    raise ValueError(
        f"DATABASE_URL scheme {scheme!r} is not supported: use sqlite:///path or "
        "postgres://user:password@host:port/dbname"
    )
