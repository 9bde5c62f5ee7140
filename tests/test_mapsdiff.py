"""vmalab.trace.mapsdiff: model maps vs. a real maps/smaps dump."""

from __future__ import annotations

import os

import pytest

from vmalab.errors import UserInputError
from vmalab.trace.mapsdiff import diff_maps, parse_entries

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "traces")

MODEL = """\
00400000-00401000 r-xp 00000000 00:01 7 /bin/x
00401000-00403000 rw-p 00000000 00:00 0
00404000-00405000 rw-p 00000000 00:00 0
7fff0000-7fff1000 rw-p 00000000 00:00 0 [stack]
VmFlags: rd wr mr mw me gu ac
"""

REAL = """\
00400000-00401000 r-xp 00000000 08:01 1234 /bin/x
00401000-00402000 rw-p 00000000 00:00 0
00402000-00403000 rw-p 00000000 00:00 0
7fff0000-7fff1000 r--p 00000000 00:00 0 [stack]
VmFlags: rd mr mw me gu
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
"""


def test_identical_texts_have_no_difference() -> None:
    with open(os.path.join(FIX, "python_threads.15144.final.maps")) as f:
        text = f.read()
    assert diff_maps(text, text) == []


def test_every_kind_of_difference() -> None:
    d = diff_maps(MODEL, REAL)
    assert [x.kind for x in d] == ["range", "extra", "perms", "vmflags"]
    rng, extra, perms, flags = d
    # the model merged what the kernel kept apart: one difference for the cluster
    assert (rng.start, rng.end) == (0x401000, 0x403000)
    assert rng.model == "00401000-00403000"
    assert rng.real == "00401000-00402000 00402000-00403000"
    assert extra.real is None and "00404000-00405000" in extra.describe()
    assert (perms.model, perms.real) == ("rw-p", "r--p")
    assert (flags.model, flags.real) == ("ac wr", "-")
    # device and inode differ for /bin/x, and [vsyscall] is ignored: neither is reported
    assert all(x.start != 0x400000 for x in d)


def test_missing_offset_name_and_ignores() -> None:
    model = "10000-20000 rw-p 00001000 00:00 0 /a\n"
    real = "10000-20000 rw-p 00000000 00:00 0 /b\n30000-31000 r--p 00000000 00:00 0 [vvar]\n"
    d = diff_maps(model, real)
    assert [x.kind for x in d] == ["offset", "name", "missing"]
    assert d[2].model is None and "[vvar]" in d[2].describe()
    assert [x.kind for x in diff_maps(model, real, ignore=("[vvar]",))] == ["offset", "name"]


def test_ignore_flags() -> None:
    a = "10000-20000 rw-p 00000000 00:00 0\nVmFlags: rd wr gu\n"
    b = "10000-20000 rw-p 00000000 00:00 0\nVmFlags: rd wr\n"
    assert [x.kind for x in diff_maps(a, b)] == ["vmflags"]
    assert diff_maps(a, b, ignore_flags=("gu",)) == []
    # VmFlags are compared only when both sides have them
    assert diff_maps(a, "10000-20000 rw-p 00000000 00:00 0\n") == []


@pytest.mark.parametrize(
    "text,where",
    [
        ("not a maps line\n", "real:1"),
        ("20000-10000 rw-p 00000000 00:00 0\n", "real:1"),
        ("", "real"),
    ],
)
def test_bad_dump_is_a_located_error(text: str, where: str) -> None:
    with pytest.raises(UserInputError) as e:
        diff_maps(MODEL, text)
    assert e.value.location == where


def test_parse_entries_reads_smaps() -> None:
    es = parse_entries(MODEL)
    assert len(es) == 4 and es[3].vmflags == frozenset("rd wr mr mw me gu ac".split())
    assert es[1].vmflags is None and es[0].name == "/bin/x"
