"""KDD Cup 99: parsing (hand-written rows and the real 10% file), labels, encoding."""

import gzip
import time
from pathlib import Path

import numpy as np
import pytest

from parallel_backprop.data import (CATEGORIES, FEATURES, KddEncoder, KddTable, attack_category,
                                    kdd_targets, read_kdd)
from parallel_backprop.data.kdd import LOG_SCALED, NUMERIC
from parallel_backprop.errors import DataError

SHARED_KDD = Path(__file__).resolve().parents[2] / "shared" / "data" / "kddcup.data_10_percent.gz"

ROWS = """\
0,tcp,http,SF,181,5450,0,0,0,0,0,1,0,0,0,0,0,0,0,0,0,0,8,8,0.00,0.00,0.00,0.00,1.00,0.00,0.00,9,9,1.00,0.00,0.11,0.00,0.00,0.00,0.00,0.00,normal.
184,tcp,telnet,SF,1511,2957,0,0,0,3,0,1,2,1,0,0,1,0,0,0,0,0,1,1,0.00,0.00,0.00,0.00,1.00,0.00,0.00,1,3,1.00,0.00,1.00,0.67,0.00,0.00,0.00,0.00,buffer_overflow.
0,tcp,telnet,S0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,6,5,0.83,1.00,0.00,0.00,0.83,0.33,0.00,5,6,1.00,0.00,0.20,0.33,1.00,0.83,0.00,0.00,neptune.
0,icmp,ecr_i,SF,1032,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,316,316,0.00,0.00,0.00,0.00,1.00,0.00,0.00,148,3,0.02,0.02,0.02,0.00,0.00,0.00,0.00,0.00,smurf.
0,tcp,http,SF,181,5450,0,0,0,0,0,1,0,0,0,0,0,0,0,0,0,0,8,8,0.00,0.00,0.00,0.00,1.00,0.00,0.00,9,9,1.00,0.00,0.11,0.00,0.00,0.00,0.00,0.00,normal.
23,tcp,telnet,SF,104,276,0,0,0,0,5,0,0,0,0,0,0,0,0,0,0,0,1,1,0.00,0.00,0.00,0.00,1.00,0.00,0.00,1,2,1.00,0.00,1.00,1.00,0.00,0.00,0.00,0.00,guess_passwd.
0,udp,private,SF,105,146,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,1,1,0.00,0.00,0.00,0.00,1.00,0.00,0.00,255,254,1.00,0.01,0.00,0.00,0.00,0.00,0.00,0.00,snmpgetattack.
"""
N_ROWS = 7


def write(path, text, compress=False):
    data = text.encode()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def replace_field(text, line, column, value):
    """``text`` with field ``column`` (0-based) of line ``line`` (1-based) set to ``value``."""
    lines = text.splitlines()
    fields = lines[line - 1].split(",")
    fields[column] = value
    lines[line - 1] = ",".join(fields)
    return "\n".join(lines) + "\n"


# --- parsing ------------------------------------------------------------------------------

@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_parse_rows(tmp_path, compress):
    table = read_kdd(write(tmp_path / "rows.data", ROWS, compress))
    assert len(table) == N_ROWS
    assert table.numeric.shape == (N_ROWS, 38) and table.numeric.dtype == np.float64
    assert table.categorical.shape == (N_ROWS, 3) and table.categorical.dtype.kind == "U"
    assert table.labels.tolist() == ["normal.", "buffer_overflow.", "neptune.", "smurf.",
                                     "normal.", "guess_passwd.", "snmpgetattack."]
    assert table.categorical[3].tolist() == ["icmp", "ecr_i", "SF"]
    assert table.categorical[6].tolist() == ["udp", "private", "SF"]
    row = dict(zip(NUMERIC, table.numeric[1]))
    assert row["duration"] == 184 and row["src_bytes"] == 1511 and row["dst_bytes"] == 2957
    assert row["hot"] == 3 and row["dst_host_srv_count"] == 3
    assert row["dst_host_same_src_port_rate"] == 1.0 and row["dst_host_srv_diff_host_rate"] == 0.67
    np.testing.assert_array_equal(table.numeric[0], table.numeric[4])  # a repeated row
    assert str(tmp_path / "rows.data") == table.source


def test_line_ends_blank_lines_and_no_final_newline(tmp_path):
    crlf = ROWS.replace("\n", "\r\n")
    a = read_kdd(write(tmp_path / "crlf", crlf))
    b = read_kdd(write(tmp_path / "gaps", ROWS.replace("\n", "\n\n", 2) + "\n\n"))
    c = read_kdd(write(tmp_path / "nofinal", ROWS.rstrip("\n")))
    for table in (a, b, c):
        assert len(table) == N_ROWS and table.labels[-1] == "snmpgetattack."
        np.testing.assert_array_equal(table.numeric, a.numeric)


def test_rows_without_labels(tmp_path):
    unlabelled = "\n".join(line.rsplit(",", 1)[0] for line in ROWS.splitlines())
    path = write(tmp_path / "x.csv", unlabelled)
    table = read_kdd(path, require_labels=False)
    assert table.labels is None and table.numeric.shape == (N_ROWS, 38)
    assert table.categorical[0].tolist() == ["tcp", "http", "SF"]
    with pytest.raises(DataError, match=r"x\.csv line 1: 41 fields, expected 42 \(41 features "
                                        r"and a label\)"):
        read_kdd(path)
    # Labelled rows are still read (and checked) when labels are optional.
    assert read_kdd(write(tmp_path / "y.csv", ROWS), require_labels=False).labels is not None


BAD_ROWS = {
    "field count": (lambda t: t.replace("0,udp,private,SF,105,146,", "0,udp,private,SF,"),
                    r"line 7: 40 fields, expected 42 \(41 features and a label\)"),
    "non-numeric": (lambda t: replace_field(t, 3, 4, "abc"),
                    r"line 3: column src_bytes: 'abc' is not a number"),
    "empty field": (lambda t: replace_field(t, 2, 0, ""),
                    r"line 2: column duration: '' is not a number"),
    "nan": (lambda t: replace_field(t, 4, 28, "nan"),
            r"line 4: column same_srv_rate: 'nan' is not a finite number"),
    "inf": (lambda t: replace_field(t, 6, 5, "inf"),
            r"line 6: column dst_bytes: 'inf' is not a finite number"),
    "unknown label": (lambda t: replace_field(t, 5, 41, "teleport."),
                      r"line 5: unknown label 'teleport\.', expected normal\. or one of"),
    "header row": (lambda t: ",".join(FEATURES) + ",label\n" + t,
                   r"line 1: column duration: 'duration' is not a number"),
}


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_bad_rows_name_file_and_line(tmp_path, case, compress):
    corrupt, message = BAD_ROWS[case]
    path = write(tmp_path / "bad.data", corrupt(ROWS), compress)
    with pytest.raises(DataError, match=r"bad\.data " + message) as info:
        read_kdd(path)
    assert "\n" not in str(info.value)


def test_first_bad_line_is_named_even_when_a_later_row_repeats_it(tmp_path):
    text = replace_field(ROWS, 2, 4, "x1") + replace_field(ROWS, 2, 4, "x1")
    with pytest.raises(DataError, match="line 2: column src_bytes: 'x1'"):
        read_kdd(write(tmp_path / "twice", text))
    text = ROWS + replace_field(ROWS, 1, 4, "x2")  # first bad row is line 8, a copy of line 1
    with pytest.raises(DataError, match="line 8: column src_bytes: 'x2'"):
        read_kdd(write(tmp_path / "late", text))


def test_empty_missing_and_corrupt_files(tmp_path):
    for name, content in (("empty", b""), ("blank", b"\n\n\r\n")):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(DataError, match=name + r": empty file, expected KDD Cup 99 rows"):
            read_kdd(tmp_path / name)
    (tmp_path / "empty.gz").write_bytes(gzip.compress(b""))
    with pytest.raises(DataError, match=r"empty\.gz: empty file"):
        read_kdd(tmp_path / "empty.gz")
    with pytest.raises(DataError, match=r"absent\.gz: file not found"):
        read_kdd(tmp_path / "absent.gz")
    data = gzip.compress(ROWS.encode() * 50)
    (tmp_path / "cut.gz").write_bytes(data[:len(data) // 2])
    with pytest.raises(DataError, match=r"cut\.gz: corrupt or truncated gzip data"):
        read_kdd(tmp_path / "cut.gz")
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x55
    (tmp_path / "flip.gz").write_bytes(bytes(flipped))
    with pytest.raises(DataError, match=r"flip\.gz: corrupt or truncated gzip data"):
        read_kdd(tmp_path / "flip.gz")


# --- labels -------------------------------------------------------------------------------

def test_attack_categories():
    expected = {
        "normal.": "normal", "smurf.": "dos", "neptune": "dos", "back.": "dos", "land.": "dos",
        "pod.": "dos", "teardrop.": "dos", "apache2.": "dos", "mailbomb.": "dos",
        "processtable.": "dos", "udpstorm.": "dos", "ipsweep.": "probe", "nmap.": "probe",
        "portsweep.": "probe", "satan.": "probe", "mscan.": "probe", "saint.": "probe",
        "ftp_write.": "r2l", "guess_passwd.": "r2l", "imap.": "r2l", "multihop.": "r2l",
        "phf.": "r2l", "spy.": "r2l", "warezclient.": "r2l", "warezmaster.": "r2l",
        "httptunnel.": "r2l", "named.": "r2l", "sendmail.": "r2l", "snmpgetattack.": "r2l",
        "snmpguess.": "r2l", "worm.": "r2l", "xlock.": "r2l", "xsnoop.": "r2l",
        "buffer_overflow.": "u2r", "loadmodule.": "u2r", "perl.": "u2r", "rootkit.": "u2r",
        "ps.": "u2r", "sqlattack.": "u2r", "xterm.": "u2r",
    }
    assert {label: attack_category(label) for label in expected} == expected
    with pytest.raises(DataError, match="unknown KDD Cup 99 label 'teleport.'"):
        attack_category("teleport.")


def test_targets_for_both_tasks():
    labels = np.array(["normal.", "smurf.", "satan.", "normal.", "imap.", "rootkit.", "ps."])
    assert kdd_targets(labels, "binary").tolist() == [0, 1, 1, 0, 1, 1, 1]
    category = kdd_targets(labels, "category")
    assert category.dtype == np.int64
    assert [CATEGORIES[c] for c in category] == ["normal", "dos", "probe", "normal", "r2l",
                                                 "u2r", "u2r"]
    with pytest.raises(DataError, match="KDD task 'multi': expected one of binary, category"):
        kdd_targets(labels, "multi")


# --- encoding -----------------------------------------------------------------------------

@pytest.fixture
def rows_table(tmp_path):
    return read_kdd(write(tmp_path / "rows.data", ROWS))


def test_onehot_encoding(rows_table):
    encoder = KddEncoder("onehot").fit(rows_table)
    x = encoder.transform(rows_table)
    # 38 numeric + protocols {icmp, tcp, udp} + services {ecr_i, http, private, telnet}
    # + flags {S0, SF}
    assert encoder.n_features == 38 + 3 + 4 + 2 and x.shape == (N_ROWS, encoder.n_features)
    assert x.dtype == np.float32 and x.flags.c_contiguous
    onehot = x[:, 38:]
    assert set(np.unique(onehot)) == {0.0, 1.0} and onehot.sum(axis=1).tolist() == [3.0] * N_ROWS
    assert onehot[3].tolist() == [1, 0, 0, 1, 0, 0, 0, 0, 1]  # icmp, ecr_i, SF
    # Numeric columns standardised on the fitted table: mean 0, std 1 (or 0 when constant).
    numeric = x[:, :38].astype(np.float64)
    np.testing.assert_allclose(numeric.mean(axis=0), 0, atol=1e-6)
    stds = numeric.std(axis=0)
    assert np.all((np.abs(stds - 1) < 1e-5) | (stds < 1e-6))
    # src_bytes is log-scaled before standardising.
    src = rows_table.numeric[:, NUMERIC.index("src_bytes")]
    logged = np.log1p(src)
    expected = (logged - logged.mean()) / logged.std()
    np.testing.assert_allclose(x[:, NUMERIC.index("src_bytes")], expected, rtol=1e-5, atol=1e-6)


def with_unknown_categories(table):
    categorical = table.categorical.astype("U20")
    categorical[0] = ["sctp", "gopher_new", "SF"]
    categorical[2, 2] = "RSTOS9"
    return KddTable(table.numeric, categorical, table.labels)


def test_unknown_categories_encode_as_zeros(rows_table):
    encoder = KddEncoder("onehot").fit(rows_table)
    known = encoder.transform(rows_table)
    x = encoder.transform(with_unknown_categories(rows_table))
    assert x[0, 38:41].tolist() == [0, 0, 0] and x[0, 41:45].tolist() == [0, 0, 0, 0]
    assert x[0, 45:].tolist() == [0, 1]                      # SF still known
    assert x[2, 45:].tolist() == [0, 0] and x[2, 38:45].sum() == 2
    np.testing.assert_array_equal(x[:, :38], known[:, :38])
    np.testing.assert_array_equal(x[3:], known[3:])


def test_ordinal_encoding_and_unknowns(rows_table):
    encoder = KddEncoder("ordinal").fit(rows_table)
    x = encoder.transform(rows_table)
    assert encoder.n_features == 41 and x.shape == (N_ROWS, 41)
    codes = np.array([[1, 1, 1], [1, 3, 1], [1, 3, 0], [0, 0, 1], [1, 1, 1], [1, 3, 1], [2, 2, 1]])
    expected = (codes - codes.mean(axis=0)) / codes.std(axis=0)
    np.testing.assert_allclose(x[:, 38:], expected, rtol=1e-5)
    unknown = encoder.transform(with_unknown_categories(rows_table))
    minus_one = (-1 - codes.mean(axis=0)) / codes.std(axis=0)
    np.testing.assert_allclose(unknown[0, 38:40], minus_one[:2], rtol=1e-5)
    assert np.all(np.isfinite(unknown))


@pytest.mark.parametrize("encoding", ["onehot", "ordinal"])
def test_encoder_round_trip_through_npz(rows_table, tmp_path, encoding):
    encoder = KddEncoder(encoding).fit(rows_table)
    arrays = encoder.to_arrays()
    assert all(a.dtype.kind in "biufU" for a in arrays.values()), arrays
    np.savez(tmp_path / "enc.npz", **arrays)
    with np.load(tmp_path / "enc.npz", allow_pickle=False) as saved:
        restored = KddEncoder.from_arrays(dict(saved))
    table = with_unknown_categories(rows_table)
    np.testing.assert_array_equal(restored.transform(table), encoder.transform(table))


def test_encoder_misuse(rows_table):
    with pytest.raises(DataError, match="KDD encoding 'binary'"):
        KddEncoder("binary")
    with pytest.raises(DataError, match="before fit"):
        KddEncoder().transform(rows_table)
    with pytest.raises(DataError, match="no rows"):
        KddEncoder().fit(rows_table.take(np.zeros(0, int)))
    arrays = KddEncoder().fit(rows_table).to_arrays()
    del arrays["vocab_flag"]
    with pytest.raises(DataError, match="missing vocab_flag"):
        KddEncoder.from_arrays(arrays)
    arrays = KddEncoder().fit(rows_table).to_arrays()
    arrays["std"] = arrays["std"][:5]
    with pytest.raises(DataError, match="expected 38"):
        KddEncoder.from_arrays(arrays)


def test_constant_and_negative_columns_stay_finite(rows_table):
    numeric = rows_table.numeric.copy()
    numeric[:, NUMERIC.index("duration")] = -5.0          # negative in a log-scaled column
    table = KddTable(numeric, rows_table.categorical, rows_table.labels)
    x = KddEncoder().fit(table).transform(table)
    assert np.all(np.isfinite(x))
    # A constant column: (v - mean) / 1, zero up to rounding.
    np.testing.assert_allclose(x[:, NUMERIC.index("duration")], 0, atol=1e-6)
    assert "duration" in LOG_SCALED


# --- the real 10% file --------------------------------------------------------------------

@pytest.fixture(scope="module")
def real_table():
    if not SHARED_KDD.is_file():
        pytest.skip(f"the real KDD Cup 99 10% file is not at {SHARED_KDD}")
    start = time.perf_counter()
    table = read_kdd(SHARED_KDD)
    print(f"\nparsed {SHARED_KDD.name} in {time.perf_counter() - start:.2f} s")
    return table


def test_real_file_rows_and_labels(real_table):
    assert len(real_table) == 494_021
    assert real_table.numeric.shape == (494_021, 38)
    names, counts = np.unique(real_table.labels, return_counts=True)
    counts = dict(zip(names.tolist(), counts.tolist()))
    assert counts["normal."] == 97_278
    assert counts["smurf."] == 280_790
    assert counts["neptune."] == 107_201
    assert len(counts) == 23                                # normal + 22 training attacks
    assert sorted(np.unique(real_table.categorical[:, 0])) == ["icmp", "tcp", "udp"]
    assert len(np.unique(real_table.categorical[:, 1])) == 66
    assert len(np.unique(real_table.categorical[:, 2])) == 11
    assert np.bincount(kdd_targets(real_table.labels, "binary")).tolist() == [97_278, 396_743]
    # The file's first row, parsed exactly.
    assert real_table.numeric[0, :3].tolist() == [0, 181, 5450]


def test_real_file_encoding_is_stable(real_table, tmp_path):
    rng = np.random.default_rng(0)
    order = rng.permutation(len(real_table))
    train, other = real_table.take(order[:40_000]), real_table.take(order[40_000:60_000])
    encoder = KddEncoder().fit(train)
    np.savez(tmp_path / "enc.npz", **encoder.to_arrays())
    with np.load(tmp_path / "enc.npz", allow_pickle=False) as saved:
        restored = KddEncoder.from_arrays(dict(saved))
    x = encoder.transform(other)
    np.testing.assert_array_equal(restored.transform(other), x)
    assert x.shape == (20_000, encoder.n_features) and np.all(np.isfinite(x))
    # Fitting again on the same rows gives the same encoder.
    np.testing.assert_array_equal(KddEncoder().fit(train).transform(other), x)
    # Unknown categories at transform time do not crash.
    odd = with_unknown_categories(other.take(np.arange(10)))
    assert np.all(np.isfinite(encoder.transform(odd)))
