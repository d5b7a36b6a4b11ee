"""What ``OTP_REDIS_URL`` names: one server, a Sentinel-watched master, or a Cluster.

Forms:

* ``redis://[user:password@]host:port[/db]``, ``rediss://...`` (TLS), ``unix:///path.sock?db=0``
* ``redis+sentinel://[user:password@]host:port[,host:port...]/<master-name>[/<db>]``
  (``rediss+sentinel://`` for TLS; the credentials are the data nodes', sentinels are asked without)
* ``redis+cluster://[user:password@]host:port[,host:port...]`` (``rediss+cluster://`` for TLS)

Pure parsing, so settings can refuse a bad URL at start with every other problem.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import unquote, urlsplit

from redis.asyncio.connection import parse_url as redis_parse_url

Kind = Literal["single", "sentinel", "cluster"]

_SINGLE_SCHEMES = ("redis", "rediss", "unix")
_MULTI_SCHEMES: dict[str, tuple[Kind, bool]] = {
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
}


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """Where Redis is, read from ``OTP_REDIS_URL``."""

    kind: Kind
    url: str = field(repr=False)  # may carry a password
    nodes: tuple[tuple[str, int], ...] = ()
    master_name: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False

    def describe(self) -> str:
        """The target without credentials (user, password, or any query: redis-py reads a password
        there too), for logs."""
        if self.kind == "single":
            parts = urlsplit(self.url)
            return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"
        hosts = ",".join(f"{h}:{p}" for h, p in self.nodes)
        return f"{self.kind} {hosts}" + (f" master {self.master_name}" if self.master_name else "")

    @property
    def hosts(self) -> tuple[str, ...]:
        """Every host the URL names, never its credentials; none for a unix socket."""
        if self.kind != "single":
            return tuple(host for host, _ in self.nodes)
        host = urlsplit(self.url).hostname  # read as redis-py reads it, so the host it will connect to
        return (unquote(host),) if host else ()


def parse_redis_url(url: str) -> RedisTarget:
    """Read an ``OTP_REDIS_URL``; raise ValueError saying what is wrong with it."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError("OTP_REDIS_URL must look like redis://host:6379/0 (see the README for the forms)")
    if scheme in _SINGLE_SCHEMES:
        _check_single(scheme, url)
        return RedisTarget(kind="single", url=url, tls=scheme == "rediss")
    if scheme not in _MULTI_SCHEMES:
        raise ValueError(
            f"OTP_REDIS_URL scheme {scheme!r} is not one of redis, rediss, unix, "
            "redis+sentinel, redis+cluster (or rediss+...)"
        )
    kind, tls = _MULTI_SCHEMES[scheme]
    userinfo, _, location = rest.rpartition("@")
    hosts, _, path = location.partition("/")
    nodes = tuple(_host_port(item, n) for n, item in enumerate((i for i in hosts.split(",") if i), 1))
    if not nodes:
        raise ValueError("OTP_REDIS_URL names no host:port")
    username, password = _credentials(userinfo)
    parts = [p for p in path.split("/") if p]
    if kind == "cluster":
        if parts:
            raise ValueError("OTP_REDIS_URL: a redis+cluster URL has no path (a Cluster has only database 0)")
        return RedisTarget(kind, url, nodes, username=username, password=password, tls=tls)
    if not parts or len(parts) > 2:
        raise ValueError("OTP_REDIS_URL: a redis+sentinel URL ends in /<master-name> or /<master-name>/<db>")
    if len(parts) == 2 and not (parts[1].isascii() and parts[1].isdigit()):
        raise ValueError("OTP_REDIS_URL: the database in a redis+sentinel URL is a number")
    db = int(parts[1]) if len(parts) == 2 else 0
    return RedisTarget(kind, url, nodes, parts[0], db, username, password, tls)


def _check_single(scheme: str, url: str) -> None:
    """What redis-py would only find at the first connection (or never: it ignores a bad database)."""
    try:
        options = redis_parse_url(url)
    except ValueError:  # its messages quote the part it could not read, which can be the password
        raise ValueError(
            "OTP_REDIS_URL cannot be read as a Redis URL (in a password, characters such as # / ? @ "
            "must be percent-encoded)"
        ) from None
    if scheme == "unix":
        if not options.get("path"):
            raise ValueError(
                "OTP_REDIS_URL: a unix:// URL names the socket, as in unix:///run/redis.sock?db=0"
            )
        return
    if not options.get("host"):
        raise ValueError("OTP_REDIS_URL names no host, as in redis://host:6379/0")
    database = urlsplit(url).path.strip("/")
    if database and not (database.isascii() and database.isdigit()):
        raise ValueError("OTP_REDIS_URL: the database is a number, as in redis://host:6379/0")


def _host_port(item: str, nth: int) -> tuple[str, int]:
    host, sep, port = item.rpartition(":")
    if not sep or not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        # not quoted: a password with an unencoded "@" or "," would be read as a node
        raise ValueError(f"OTP_REDIS_URL: node {nth} is not host:port")
    return host.strip("[]"), int(port)


def _credentials(userinfo: str) -> tuple[str | None, str | None]:
    if not userinfo:
        return None, None
    user, sep, password = userinfo.partition(":")
    if not sep:
        return None, unquote(user)  # redis://secret@host: a password alone
    return unquote(user) or None, unquote(password)
