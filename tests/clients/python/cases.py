"""The cases every client runs: password files, logins, refusals, sizes."""

# The walkthrough's password: "password", and its MD5 and SHA-1 hex digests.
PASSWORD = "password"
MD5_HEX = "5f4dcc3b5aa765d61d8327deb882cf99"
SHA1_HEX = "5baa61e4c9b93f3f0682250b6cf8331b7ee68fd8"

# The password files: kind → text. Every file lets in the users of LOGINS[kind] with PASSWORD.
PASSWORD_FILES = {
    "plain": f"admin:{PASSWORD}\n",
    "md5": f"admin:{MD5_HEX}\n",
    "sha1": f"admin:{SHA1_HEX}\n",
    # The walkthrough's mixed file, with 0x prefixes.
    "mixed": f"admin:{PASSWORD}\nadminmd5:0x{MD5_HEX}\nadminsha:0x{SHA1_HEX}\n",
}

# (file kind, user) pairs that log in with PASSWORD.
LOGINS = [
    ("plain", "admin"),
    ("md5", "admin"),
    ("sha1", "admin"),
    ("mixed", "admin"),
    ("mixed", "adminmd5"),
    ("mixed", "adminsha"),
]

# (file kind, user, password) triples that must be refused.
REFUSALS = [
    ("plain", "admin", "wrong"),
    ("plain", "nobody", PASSWORD),
    # The digest itself is not the password.
    ("md5", "admin", MD5_HEX),
    ("sha1", "admin", "wrong"),
    ("mixed", "adminmd5", "wrong"),
    ("mixed", "adminsha", SHA1_HEX),
    ("mixed", "admin", ""),
]


def _case_id(case):
    return "-".join(str(part) or "empty" for part in case)


LOGIN_IDS = [_case_id(case) for case in LOGINS]
REFUSAL_IDS = [_case_id(case) for case in REFUSALS]


# Requests and replies longer than 2000 bytes, q's compression threshold (kdb-ipc.md §5.1): a
# vector of this many longs is 24 KB on the wire.
LARGE_COUNT = 3000

# Conformance vector C1 (shared/conformance/ipc-vectors.tsv): `2000#1b` as q compresses it, with
# byte 1 made 01 so that it is a sync request.
C1_SYNC = bytes.fromhex(
    "0101010026000000de070000000100d00700000101ff00ff00ff00ff00ff00ff00ff00ff00c5"
)
