"""KDD Cup 1999: the UCI CSV files, their labels, and the feature encoding.

A row is 41 comma-separated features and a label with a trailing dot::

    0,tcp,http,SF,181,5450,0,0,...,0.00,normal.

Three features are categorical (protocol_type, service, flag), 38 numeric.
``read_kdd`` parses a file (gzipped or plain, decided by its first bytes)
into a ``KddTable``; ``kdd_targets`` turns labels into class indices for the
``binary`` or ``category`` task.

The features' encoding into network inputs is ``preprocess.KddPreprocessor``;
splitting is ``builtin.py``, finding the files ``sources.py``.
"""

from __future__ import annotations

from io import BytesIO
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..fileio import one_line
from .io import open_data
from .schema import TableSchema, register_schema, register_target_map
from .validate import check_choice

FEATURES = (
    "duration", "protocol_type", "service", "flag", "src_bytes", "dst_bytes", "land",
    "wrong_fragment", "urgent", "hot", "num_failed_logins", "logged_in", "num_compromised",
    "root_shell", "su_attempted", "num_root", "num_file_creations", "num_shells",
    "num_access_files", "num_outbound_cmds", "is_host_login", "is_guest_login", "count",
    "srv_count", "serror_rate", "srv_serror_rate", "rerror_rate", "srv_rerror_rate",
    "same_srv_rate", "diff_srv_rate", "srv_diff_host_rate", "dst_host_count",
    "dst_host_srv_count", "dst_host_same_srv_rate", "dst_host_diff_srv_rate",
    "dst_host_same_src_port_rate", "dst_host_srv_diff_host_rate", "dst_host_serror_rate",
    "dst_host_srv_serror_rate", "dst_host_rerror_rate", "dst_host_srv_rerror_rate",
)
CATEGORICAL = ("protocol_type", "service", "flag")
NUMERIC = tuple(f for f in FEATURES if f not in CATEGORICAL)            # 38 names
_NUMERIC_COLUMNS = [FEATURES.index(f) for f in NUMERIC]
_CATEGORICAL_COLUMNS = [FEATURES.index(f) for f in CATEGORICAL]
N_FIELDS = len(FEATURES) + 1                                            # 42 with the label

# Counts and byte totals spanning several orders of magnitude (src_bytes goes
# to 7e8, duration to 6e4): log1p brings them to a scale where standardising
# does not squash every ordinary row to the same value.
LOG_SCALED = (
    "duration", "src_bytes", "dst_bytes", "hot", "num_failed_logins", "num_compromised",
    "num_root", "num_file_creations", "num_shells", "num_access_files", "count",
    "srv_count", "dst_host_count", "dst_host_srv_count",
)

CATEGORIES = ("normal", "dos", "probe", "r2l", "u2r")
_ATTACKS = {
    # The 22 attacks of the training files, then those only in `corrected`.
    "dos": ("back", "land", "neptune", "pod", "smurf", "teardrop",
            "apache2", "mailbomb", "processtable", "udpstorm"),
    "probe": ("ipsweep", "nmap", "portsweep", "satan", "mscan", "saint"),
    "r2l": ("ftp_write", "guess_passwd", "imap", "multihop", "phf", "spy", "warezclient",
            "warezmaster", "httptunnel", "named", "sendmail", "snmpgetattack", "snmpguess",
            "worm", "xlock", "xsnoop"),
    "u2r": ("buffer_overflow", "loadmodule", "perl", "rootkit", "ps", "sqlattack", "xterm"),
}
ATTACK_CATEGORY = {"normal": "normal", **{name: category
                                          for category, names in _ATTACKS.items()
                                          for name in names}}
TASKS = {"binary": ("normal", "attack"), "category": CATEGORIES}

# Every value of the categorical features in the KDD files (the 10% file has 66 of the 70
# services): a fixed list keeps the one-hot width the same whatever rows are trained on.
PROTOCOLS = ("icmp", "tcp", "udp")
SERVICES = (
    "IRC", "X11", "Z39_50", "aol", "auth", "bgp", "courier", "csnet_ns", "ctf", "daytime",
    "discard", "domain", "domain_u", "echo", "eco_i", "ecr_i", "efs", "exec", "finger", "ftp",
    "ftp_data", "gopher", "harvest", "hostnames", "http", "http_2784", "http_443", "http_8001",
    "imap4", "iso_tsap", "klogin", "kshell", "ldap", "link", "login", "mtp", "name",
    "netbios_dgm", "netbios_ns", "netbios_ssn", "netstat", "nnsp", "nntp", "ntp_u", "other",
    "pm_dump", "pop_2", "pop_3", "printer", "private", "red_i", "remote_job", "rje", "shell",
    "smtp", "sql_net", "ssh", "sunrpc", "supdup", "systat", "telnet", "tftp_u", "tim_i", "time",
    "urh_i", "urp_i", "uucp", "uucp_path", "vmnet", "whois")
FLAGS = ("OTH", "REJ", "RSTO", "RSTOS0", "RSTR", "S0", "S1", "S2", "S3", "SF", "SH")
LABEL = "label"

_BLOCK_BYTES = 1 << 26  # read 64 MiB at a time: the full file is 743 MB unzipped


@dataclass
class KddTable:
    """Parsed KDD rows, columns in file order within each part.

    numeric      float64 (n, 38)   the features named in ``NUMERIC``
    categorical  str (n, 3)        protocol_type, service, flag
    labels       str (n,) or None  as in the file, e.g. ``"smurf."``
    """

    numeric: np.ndarray
    categorical: np.ndarray
    labels: np.ndarray | None
    source: str = ""

    def __len__(self) -> int:
        return len(self.numeric)

    def take(self, index: np.ndarray) -> "KddTable":
        """The rows ``index`` (an integer array or a boolean mask)."""
        labels = None if self.labels is None else self.labels[index]
        return KddTable(self.numeric[index], self.categorical[index], labels, self.source)


def attack_category(label: str) -> str:
    """The category (normal, dos, probe, r2l, u2r) of a label, with or without its dot."""
    name = str(label).strip().removesuffix(".")
    if name not in ATTACK_CATEGORY:
        raise DataError(f"unknown KDD Cup 99 label {label!r}, expected normal or one of the "
                        f"{len(ATTACK_CATEGORY) - 1} known attack names")
    return ATTACK_CATEGORY[name]


def _binary_class(label: str) -> str:
    return "normal" if attack_category(label) == "normal" else "attack"


TARGET_MAPS = {"binary": register_target_map("kdd99-binary", _binary_class, TASKS["binary"]),
               "category": register_target_map("kdd99-category", attack_category, CATEGORIES)}


def kdd_schema(task: str | None = None, encoding: str = "onehot") -> TableSchema:
    """The table schema of a KDD file: its 41 feature names and "label", the categorical
    features' every value, the heavy-tailed counts log-scaled, every numeric feature kept;
    the label mapped to ``task``'s classes (None: left as the 23 labels)."""
    if task is not None:
        check_choice("KDD task", task, TASKS)
    check_choice("KDD encoding", encoding, ("onehot", "ordinal"))
    return TableSchema(
        names=(*FEATURES, LABEL), categories=dict(zip(CATEGORICAL, (PROTOCOLS, SERVICES, FLAGS))),
        ordinal=CATEGORICAL if encoding == "ordinal" else (), log_scaled=LOG_SCALED,
        keep=NUMERIC, target=LABEL, target_map=None if task is None else TARGET_MAPS[task])


# "kdd99" keeps the 23 labels; "kdd99-binary" and "kdd99-category" are the tasks of
# --dataset kdd99, so a user's copy of the file trains exactly as the data set does.
register_schema("kdd99", kdd_schema())
for _task in TASKS:
    register_schema(f"kdd99-{_task}", kdd_schema(_task))


def kdd_targets(labels: np.ndarray, task: str) -> np.ndarray:
    """Class indices, int64 (n,), of string labels (n,) for ``task``.

    binary: 0 normal, 1 attack. category: the index in ``CATEGORIES``.
    """
    check_choice("KDD task", task, TASKS)
    names, inverse = np.unique(labels, return_inverse=True)
    categories = [attack_category(name) for name in names]
    if task == "binary":
        codes = [int(c != "normal") for c in categories]
    else:
        codes = [CATEGORIES.index(c) for c in categories]
    return np.asarray(codes, dtype=np.int64)[inverse.reshape(-1)]


def read_kdd(path: str | os.PathLike, require_labels: bool = True) -> KddTable:
    """Parse a KDD Cup 99 file (gzipped or plain).

    Parameters
    ----------
    path : str or PathLike
    require_labels : bool
        When False, rows of 41 fields (features only) are accepted too; all
        rows of a file must then have the count of its first row.

    Returns
    -------
    KddTable with n rows; ``labels`` is None for a file without labels.

    Raises
    ------
    DataError naming the file and, for a bad row, its line number and column.
    """
    path = Path(path)
    lines, inverse = _unique_lines(path)
    if not lines:
        raise DataError(f"{path}: empty file, expected KDD Cup 99 rows of {N_FIELDS} "
                        "comma-separated fields")
    n_fields = _check_field_counts(path, lines, inverse, require_labels)
    has_labels = n_fields == N_FIELDS
    numeric, strings = _parse(path, lines, inverse, has_labels)
    labels = strings[:, 3] if has_labels else None
    if labels is not None:
        _check_labels(path, labels, inverse)
    # Expand the distinct rows back to the file's rows (blank lines have id -1).
    rows = inverse[inverse >= 0]
    return KddTable(numeric[rows], _narrow(strings[:, :3])[rows],
                    None if labels is None else _narrow(labels)[rows], str(path))


def _narrow(strings: np.ndarray) -> np.ndarray:
    """``strings`` in the narrowest unicode dtype that holds them.

    The parser sizes all four string columns for the longest label
    ("buffer_overflow.", U16); categories fit in U11, a third less memory.
    """
    return strings.astype(f"<U{int(np.char.str_len(strings).max(initial=1))}")


def _unique_lines(path: Path) -> tuple[list[bytes], np.ndarray]:
    """Distinct non-blank lines in order of first appearance, and each line's id.

    KDD files repeat themselves: the 10% file has 494,021 rows but 145,586
    distinct ones, the full file 4.9 M rows and 1.07 M distinct. Parsing
    each distinct line once makes reading about three times faster; the
    dictionary costs ~0.1 us a line. ``inverse[i]`` is the id of line i+1,
    -1 for a blank line.
    """
    ids: dict[bytes, int] = {}
    parts = []
    with open_data(path) as stream:
        rest = b""
        while True:
            block = stream.read(_BLOCK_BYTES)
            if not block:
                break
            block = rest + block
            cut = block.rfind(b"\n") + 1
            rest, block = block[cut:], block[:cut]
            if block:
                parts.append(_line_ids(block[:-1], ids))
        if rest:
            parts.append(_line_ids(rest, ids))
    inverse = np.concatenate(parts) if parts else np.zeros(0, np.intp)
    return list(ids), inverse


def _line_ids(block: bytes, ids: dict[bytes, int]) -> np.ndarray:
    if b"\r" in block:  # Windows line ends
        block = block.replace(b"\r", b"")
    lines = block.split(b"\n")
    return np.fromiter((ids.setdefault(line, len(ids)) if line else -1 for line in lines),
                       dtype=np.intp, count=len(lines))


def _line_number(inverse: np.ndarray, line_id: int) -> int:
    """The 1-based number of the first line with id ``line_id``."""
    return int(np.argmax(inverse == line_id)) + 1


def _check_field_counts(path: Path, lines: list[bytes], inverse: np.ndarray,
                        require_labels: bool) -> int:
    """The file's field count (42, or 41 when labels are optional); raise on a bad row."""
    counts = np.fromiter((line.count(b",") + 1 for line in lines), np.intp, len(lines))
    # Ids follow first appearance, so the smallest bad id is the first bad line.
    expected = N_FIELDS if require_labels or counts[0] not in (N_FIELDS, N_FIELDS - 1) \
        else int(counts[0])
    bad = np.flatnonzero(counts != expected)
    if len(bad):
        line_id = int(bad[0])
        what = {N_FIELDS: f"{N_FIELDS} (41 features and a label)",
                N_FIELDS - 1: f"{N_FIELDS - 1} (41 features, as in the file's first row)"}
        if not require_labels and line_id == 0:
            what[N_FIELDS] += f" or {N_FIELDS - 1} (features only)"
        raise DataError(f"{path} line {_line_number(inverse, line_id)}: {counts[line_id]} "
                        f"fields, expected {what[expected]}")
    return expected


def _parse(path: Path, lines: list[bytes], inverse: np.ndarray, has_labels: bool):
    """Numeric float64 (m, 38) and string (m, 4: 3 categorical and label) of distinct lines."""
    text = b"\n".join(lines)
    string_columns = _CATEGORICAL_COLUMNS + ([N_FIELDS - 1] if has_labels else [0])
    options = dict(delimiter=",", comments=None, ndmin=2, encoding="latin-1")
    try:
        # numpy's C parser: ~6 us a row for the 38 numeric columns.
        numeric = np.loadtxt(BytesIO(text), usecols=_NUMERIC_COLUMNS, dtype=np.float64,
                             **options)
    except ValueError as exc:
        _raise_first_bad_number(path, lines, inverse, exc)
    strings = np.loadtxt(BytesIO(text), usecols=string_columns, dtype=str, **options)
    bad = ~np.isfinite(numeric)
    if bad.any():
        line_id = int(np.argmax(bad.any(axis=1)))
        column = int(np.argmax(bad[line_id]))
        value = lines[line_id].split(b",")[_NUMERIC_COLUMNS[column]].decode("latin-1")
        raise DataError(f"{path} line {_line_number(inverse, line_id)}: column "
                        f"{NUMERIC[column]}: {value!r} is not a finite number")
    return numeric, strings


def _raise_first_bad_number(path: Path, lines: list[bytes], inverse: np.ndarray,
                            exc: ValueError):
    """Find the first line whose numeric field does not parse, and name it."""
    for line_id, line in enumerate(lines):
        fields = line.split(b",")
        for column, name in zip(_NUMERIC_COLUMNS, NUMERIC):
            try:
                float(fields[column])
            except ValueError:
                value = fields[column].decode("latin-1")
                raise DataError(f"{path} line {_line_number(inverse, line_id)}: column "
                                f"{name}: {value!r} is not a number") from None
    raise DataError(f"{path}: {one_line(exc)}") from None


def _check_labels(path: Path, labels: np.ndarray, inverse: np.ndarray) -> None:
    """Every label must be normal or a known attack: its category decides the class."""
    for name in np.unique(labels):
        if str(name).strip().removesuffix(".") not in ATTACK_CATEGORY:
            line_id = int(np.argmax(labels == name))
            raise DataError(f"{path} line {_line_number(inverse, line_id)}: unknown label "
                            f"{str(name)!r}, expected normal. or one of the "
                            f"{len(ATTACK_CATEGORY) - 1} KDD Cup 99 attack names")
