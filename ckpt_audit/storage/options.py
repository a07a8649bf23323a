"""Settings of remote reads, apart from the clients, so that a local audit never imports them."""

from __future__ import annotations

from ckpt_audit.records import frozen


@frozen
class RemoteOptions:
    """Knobs for remote reads; the defaults suit both loopback tests and real object stores."""

    #: seconds to wait for a connection or for data before giving up on one attempt
    timeout: float = 30.0
    #: extra attempts after a 5xx/429, a timeout or a dropped connection
    retries: int = 3
    #: first backoff in seconds; doubled after each failed attempt
    backoff: float = 0.2
    #: the first read of a file near its start fetches this much (headers fit in one request)
    head_block: int = 64 * 1024
    #: ranges closer than this are fetched in one request (the gap is read and thrown away)
    merge_gap: int = 32 * 1024
    #: parallel requests in ``read_ranges``
    max_workers: int = 8
    #: a server that ignores Range is accepted only when the whole body is at most this big
    small_body: int = 1024 * 1024
    #: follow a redirect to another scheme or host (the Hugging Face hub's CDN) only when set
    allow_redirect_host: bool = False
    #: wall-clock budget in seconds for all the remote reads of one location tree (one audit)
    total_timeout: float = 300.0
    #: bytes one location tree may fetch in all (headers and gains are a tiny part of a shard)
    max_bytes: int = 4 * 1024**3
