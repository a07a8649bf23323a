"""Remote reads over a real HTTP server on 127.0.0.1: ranges, byte budgets, errors.

The server (tests/support/range_server.py) is a real socket server that honours Range and counts the
body bytes it sends, so every budget here is checked on both sides of the wire.
"""

from __future__ import annotations

import os
import socket

import pytest

from ckpt_audit.errors import FormatError, RemoteError
from ckpt_audit.storage import RemoteOptions, location, remote_location
from ckpt_audit.storage.ranged import merge_ranges
from tests.support.range_server import RangeServer

KIB = 1024
FAST = RemoteOptions(timeout=5.0, retries=2, backoff=0.01)


@pytest.fixture()
def served(tmp_path):
    """A folder with a few files of known random bytes, served on loopback."""
    rng = os.urandom
    files = {
        "big.bin": rng(3 * 1024 * KIB),
        "small.bin": rng(10 * KIB),
        "ckpt/model.safetensors.index.json": b'{"weight_map": {"a": "s-1.safetensors"}}',
        "ckpt/config.json": b'{"hidden_size": 8}',
        "ckpt/s-1.safetensors": rng(1000),
    }
    for name, data in files.items():
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    with RangeServer(str(tmp_path)) as srv:
        yield srv, files


def test_header_is_one_request_then_exact_ranges(served):
    srv, files = served
    src = remote_location(srv.url("big.bin"), FAST).open()
    data = files["big.bin"]
    assert src.read(0, 8) == data[:8]
    assert src.read(8, 1000) == data[8:1008]  # served from the same first block
    assert srv.get_requests() == 1
    assert srv.bytes_served == FAST.head_block
    assert src.size() == len(data)  # learnt from Content-Range, no extra request
    assert srv.get_requests() == 1
    # a gain far away costs exactly its bytes
    assert src.read(2_000_000, 4096) == data[2_000_000:2_004_096]
    assert srv.bytes_served == FAST.head_block + 4096
    assert len(srv.requests) == 2


def test_large_header_grows_by_the_missing_part_only(served):
    srv, files = served
    loc = remote_location(srv.url("big.bin"), FAST)
    src = loc.open()
    n = 200 * KIB
    assert src.read(0, 8) == files["big.bin"][:8]
    assert src.read(8, n) == files["big.bin"][8 : 8 + n]
    assert srv.get_requests() == 2
    assert srv.bytes_served == 8 + n == loc.bytes_read


def test_small_file_whole_in_one_request_and_reads_past_end_fail(served):
    srv, files = served
    src = remote_location(srv.url("small.bin"), FAST).open()
    assert src.read(0, 8) == files["small.bin"][:8]
    assert srv.bytes_served == len(files["small.bin"])
    assert src.size() == len(files["small.bin"])
    with pytest.raises(FormatError, match="outside the file"):
        src.read(len(files["small.bin"]) - 4, 8)
    assert srv.get_requests() == 1


def test_read_ranges_merges_near_and_parallelises_far(served):
    srv, files = served
    data = files["big.bin"]
    loc = remote_location(srv.url("big.bin"), FAST)
    src = loc.open()
    ranges = [(1_000_000, 512), (1_000_600, 512), (2_500_000, 100), (1_500_000, 2048)]
    got = src.read_ranges(ranges)
    assert got == [data[o : o + n] for o, n in ranges]
    assert srv.get_requests() == 3  # the first two share a request (88-byte gap)
    assert srv.bytes_served == loc.bytes_read == 1112 + 100 + 2048


def test_merge_ranges_groups_by_gap():
    spans = merge_ranges([(100, 10), (0, 10), (115, 5), (1000, 1)], gap=5)
    assert spans == [(0, 10, [1]), (100, 120, [0, 2]), (1000, 1001, [3])]


def test_retry_after_one_500(served):
    srv, files = served
    srv.fail_next(1, 500)
    src = remote_location(srv.url("big.bin"), FAST).open()
    assert src.read(2_000_000, 10) == files["big.bin"][2_000_000:2_000_010]
    assert srv.get_requests() == 2


def test_persistent_5xx_is_a_clear_error(served):
    srv, _ = served
    srv.fail_next(10, 503)
    src = remote_location(srv.url("big.bin"), FAST).open()
    with pytest.raises(RemoteError, match=r"HTTP 503") as exc:
        src.read(2_000_000, 10)
    assert "big.bin" in str(exc.value) and "3 attempts" in str(exc.value)
    assert srv.get_requests() == 3  # bounded: 1 + retries


def test_403_and_404_name_the_url(served):
    srv, _ = served
    srv.forbid("ckpt/")
    with pytest.raises(RemoteError, match="access denied") as exc:
        remote_location(srv.url("ckpt/config.json"), FAST).read_bytes()
    assert srv.url("ckpt/config.json") in str(exc.value)
    missing = remote_location(srv.url("nope.safetensors"), FAST)
    assert not missing.exists()
    with pytest.raises(RemoteError, match="not found") as exc:
        missing.open().read(0, 8)
    assert "nope.safetensors" in str(exc.value)


def test_server_ignoring_range_is_refused_for_big_files(tmp_path):
    path = tmp_path / "huge.safetensors"
    with open(path, "wb") as f:
        f.truncate(256 * 1024 * KIB)  # sparse, 256 MiB
    with RangeServer(str(tmp_path)) as srv:
        srv.ignore_range = True
        loc = remote_location(srv.url("huge.safetensors"), FAST)
        with pytest.raises(RemoteError, match="ignored the Range header"):
            loc.open().read(0, 8)
        assert loc.bytes_read == 0
        assert srv.bytes_served < 64 * 1024 * KIB  # the client hung up instead of downloading


def test_server_ignoring_range_is_accepted_for_small_files(served):
    srv, files = served
    srv.ignore_range = True
    loc = remote_location(srv.url("small.bin"), FAST)
    assert loc.open().read(100, 50) == files["small.bin"][100:150]
    assert loc.bytes_read == len(files["small.bin"])  # everything that came over the wire


def test_timeout_is_a_clear_error(served):
    srv, _ = served
    srv.delay = 1.0
    opts = RemoteOptions(timeout=0.2, retries=1, backoff=0.01)
    with pytest.raises(RemoteError, match="timed out") as exc:
        remote_location(srv.url("big.bin"), opts).open().read(0, 8)
    assert "big.bin" in str(exc.value)


def test_connection_refused_is_a_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(RemoteError, match="connection failed"):
        remote_location(f"http://127.0.0.1:{port}/x.safetensors", FAST).open().read(0, 8)


def test_folder_urls_resolve_well_known_names_without_listing(served):
    srv, files = served
    for url in (srv.url("ckpt/"), srv.url("ckpt")):  # the second is redirected to the first
        loc = location(url)
        assert loc.exists() and loc.is_dir()
        assert loc.child("config.json").read_json() == {"hidden_size": 8}
        assert not loc.child("model.safetensors").exists()
        # a probe of the well-known names: shard names come from the index, through a reader
        assert loc.listdir() == ["config.json", "model.safetensors.index.json"]
    assert not remote_location(srv.url("big.bin")).is_dir()


def test_small_files_are_fetched_once(served):
    srv, files = served
    loc = remote_location(srv.url("ckpt/"), FAST)
    a = loc.child("model.safetensors.index.json").read_bytes()
    b = loc.child("model.safetensors.index.json").read_bytes()
    assert a == b == files["ckpt/model.safetensors.index.json"]
    assert loc.bytes_read == srv.bytes_served == len(a)


def test_unknown_backend_says_what_to_install():
    pytest.importorskip("fsspec")
    try:
        import gcsfs  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("gcsfs is installed here; the missing-backend message cannot be shown")
    with pytest.raises(RemoteError, match="gcsfs") as exc:
        location("gs://bucket/ckpt/model.safetensors")
    assert "gs://bucket/ckpt/model.safetensors" in str(exc.value)


def test_size_from_head_when_content_range_hides_it(served):
    srv, files = served
    srv.hide_total = True
    src = remote_location(srv.url("big.bin"), FAST).open()
    assert src.read(0, 8) == files["big.bin"][:8]
    assert src.size() == len(files["big.bin"])  # asked with HEAD
    assert [m for m, _ in srv.requests] == ["GET", "HEAD"]
    with pytest.raises(FormatError, match="outside the file"):
        src.read(len(files["big.bin"]) - 2, 8)


def test_read_ranges_property(tmp_path_factory):
    """Random ranges: exact bytes back; fetched bytes never exceed the spans merge_ranges plans."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    root = tmp_path_factory.mktemp("prop")
    data = os.urandom(512 * KIB)
    (root / "f.bin").write_bytes(data)
    opts = RemoteOptions(timeout=5.0, retries=0, head_block=4 * KIB, merge_gap=1 * KIB)
    rng_st = st.tuples(st.integers(8 * KIB, len(data) - 1), st.integers(1, 8 * KIB)).map(
        lambda t: (t[0], min(t[1], len(data) - t[0])))

    with RangeServer(str(root)) as srv:
        @settings(max_examples=25, deadline=None)
        @given(st.lists(rng_st, min_size=1, max_size=12))
        def check(ranges):
            loc = remote_location(srv.url("f.bin"), opts)
            got = loc.open().read_ranges(ranges)
            assert got == [data[o : o + n] for o, n in ranges]
            planned = sum(e - s for s, e, _ in merge_ranges(ranges, opts.merge_gap))
            assert loc.bytes_read == planned
            assert planned <= sum(n for _, n in ranges) + opts.merge_gap * (len(ranges) - 1)

        check()
