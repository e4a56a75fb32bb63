#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpora (tests/fuzz/corpus/<target>/) from
real fixtures: the shipped policies, the request bodies docs/openapi.yaml
describes, hand-written raw HTTP requests, and a real vault's audit export
(made with the built `custos` CLI; pass its path). Each seed starts with the
target's selector bytes (see the target's header comment).

  tests/fuzz/make_corpus.py BUILD_DIR   (BUILD_DIR/src/custos is run)

Writes tests/fuzz/seed_keys.h with the seed vault's verifier key: the
export and checkpoint targets verify against it, so the real exports verify
and their mutations reach every check. Rerunning makes a new vault, a new key
and new seeds (commit them together)."""
import base64, hashlib, json, os, shutil, struct, subprocess, sys, tempfile
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CORPUS = os.path.join(HERE, "corpus")


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def policies():
    loaders = ["schema", "purposes", "roles", "regulations", "calendars", "retention", "segments", "systems"]
    for i, name in enumerate(loaders):
        with open(os.path.join(ROOT, "policies", name + ".yaml"), "rb") as f:
            write("policy_yaml", name, bytes([i]) + f.read())
    with open(os.path.join(ROOT, "tests/fixtures/policies-v1/regulations.yaml"), "rb") as f:
        write("policy_yaml", "regulations-v1-upgrade", bytes([8]) + f.read())
    small_policies(loaders)


# Seeds of at most POLICY_SEED_MAX bytes (scripts/fuzz.sh runs policy_yaml with
# that -max_len): yaml-cpp under ASan parses ~1 KB per ms, so the whole shipped
# files (up to 27 KB) cap the target at tens of inputs a second. Each seed is a
# valid file: a shipped one without comments, or cut to a few entries of its
# long maps (every regime keeps the calendar it names; the companion files the
# target loads with are cut the same way, see policy_yaml.cpp).
POLICY_SEED_MAX = 4096


def small_policies(loaders):
    def load(name):
        with open(os.path.join(ROOT, "policies", name + ".yaml")) as f:
            return yaml.safe_load(f)

    def dump(i, name, doc):
        text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
        data = bytes([i]) + text.encode()
        if len(data) <= POLICY_SEED_MAX:
            write("policy_yaml", name, data)

    for i, name in enumerate(loaders):
        dump(i, name + "-plain", load(name))
    regs = load("regulations")
    dsr, breach = list(regs["dsr"].items()), list(regs["breach"].items())
    for k in range(max(len(dsr), len(breach))):
        cut = {"version": regs["version"], "controller": regs["controller"],
               "dsr": dict([dsr[0]] + ([dsr[k]] if 0 < k < len(dsr) else [])),
               "breach": dict([breach[0]] + ([breach[k]] if 0 < k < len(breach) else []))}
        dump(loaders.index("regulations"), "regulations-cut-%02d" % k, cut)
    cals = load("calendars")["calendars"]
    own = regs["dsr"]["eu-gdpr"]["calendar"]  # the companion rules are eu-gdpr's
    for key, cal in cals.items():
        dump(loaders.index("calendars"), "calendars-cut-" + key, {"calendars": {own: cals[own], key: cal}})
    roles = load("roles")
    for key, role in roles["roles"].items():
        dump(loaders.index("roles"), "roles-cut-" + key, dict(roles, roles={key: role}))


# service_json: the route order of kRoutes in service_json.cpp, with the
# caller (kCallers index) and path id (Vault::ids index) a real client uses.
ROUTES = [
    ("POST /v1/subjects", 0, 0), ("POST /v1/subjects:batchCreate", 0, 0), ("POST /v1/subjects:batchGet", 1, 0),
    ("POST /v1/subjects/{id}:merge", 0, 0), ("PATCH /v1/subjects/{id}", 0, 0),
    ("POST /v1/subjects/{id}/touchpoints", 5, 0), ("POST /v1/subjects/{id}/orders", 5, 0),
    ("POST /v1/subjects/{id}/consents", 1, 0), ("POST /v1/consents:confirm", 1, 0),
    ("POST /v1/subjects/{id}:legalHold", 3, 0), ("POST /v1/campaigns:fetch", 2, 0), ("POST /v1/dsr", 3, 0),
    ("POST /v1/dsr/{id}:transition", 3, 2), ("POST /v1/dsr/{id}/confirmations", 8, 2), ("POST /v1/breaches", 4, 0),
    ("POST /v1/breaches/{id}/events", 4, 3), ("POST /v1/breaches/{id}:computeAffected", 4, 3),
    ("POST /v1/retention:run", 0, 0), ("POST /v1/consents:batchRecord", 1, 0), ("POST /v1/orders:batchCreate", 5, 0),
    ("POST /v1/touchpoints:batchCreate", 5, 0), ("POST /v1/subjects/{id}:privacyLink", 1, 0),
    ("POST /v1/privacy/consents", 0, 0), ("POST /v1/privacy/requests", 0, 0), ("POST /v1/campaigns:preview", 2, 0),
]


def sample(schema, spec, depth=0):
    """A value for `schema`: its example, else built from its properties."""
    if "$ref" in schema:
        name = schema["$ref"].split("/")[-1]
        return sample(spec["components"]["schemas"][name], spec, depth)
    if "example" in schema:
        return schema["example"]
    if "default" in schema:
        return schema["default"]
    if "enum" in schema:
        return schema["enum"][0]
    for k in ("oneOf", "anyOf"):
        if k in schema:
            return sample(schema[k][0], spec, depth)
    if "allOf" in schema:
        out = {}
        for s in schema["allOf"]:
            v = sample(s, spec, depth)
            if isinstance(v, dict):
                out.update(v)
        return out
    t = schema.get("type")
    if isinstance(t, list):
        t = [x for x in t if x != "null"][0]
    if t == "object" or "properties" in schema:
        if depth > 4:
            return {}
        return {k: sample(v, spec, depth + 1) for k, v in schema.get("properties", {}).items()}
    if t == "array":
        return [sample(schema.get("items", {}), spec, depth + 1)] if depth <= 4 else []
    if t == "integer":
        return schema.get("minimum", 1)
    if t == "number":
        return 1.5
    if t == "boolean":
        return True
    fmt = schema.get("format")
    if fmt == "date-time":
        return "2026-11-30T08:00:00Z"
    if fmt == "date":
        return "2026-11-30"
    return "x"


def service_bodies():
    with open(os.path.join(ROOT, "docs/openapi.yaml")) as f:
        spec = yaml.safe_load(f)
    for i, (route, caller, pid) in enumerate(ROUTES):
        method, path = route.split(" ", 1)
        op = spec["paths"][path][method.lower()]
        content = op["requestBody"]["content"]["application/json"]
        bodies = []
        if "example" in content:
            bodies.append(content["example"])
        for ex in (content.get("examples") or {}).values():
            bodies.append(ex.get("value"))
        bodies.append(sample(content["schema"], spec))
        for j, body in enumerate(bodies):
            name = "%02d-%s-%d" % (i, path.strip("/").replace("/", "_").replace("{", "").replace("}", "").replace(":", "_"), j)
            write("service_json", name, bytes([i, caller, pid, 0]) + json.dumps(body).encode())
    # Wrong types and out-of-range numbers, through the body parse.
    write("service_json", "zz-number-out-of-range", bytes([0, 0, 0, 0]) + b'{"fields": {"given_name": 1e400}}')
    write("service_json", "zz-wrong-type", bytes([4, 0, 0, 0]) + b'{"fields": [1, 2, 3]}')


def http_requests():
    reqs = {
        "get-healthz": b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "post-subject": b"POST /v1/subjects HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer t\r\n"
                        b"Custos-Purpose: administration\r\nX-Request-Id: req-1\r\nContent-Type: application/json\r\n"
                        b"Content-Length: 34\r\n\r\n{\"fields\":{\"given_name\":\"Ada\"}}  ",
        "chunked": b"POST /v1/subjects:batchGet HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"5\r\n{\"ids\r\n7\r\n\": []}\r\n0\r\n\r\n",
        "chunked-trailer": b"POST /v1/dsr HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n"
                           b"Authorization: Bearer x\r\n\r\n",
        "query": b"GET /v1/audit/entries?subject=00112233445566778899aabbccddeeff&limit=10&after=3 HTTP/1.1\r\n"
                 b"Host: h\r\n\r\n",
        "percent": b"GET /v1/subjects/%41%42 HTTP/1.1\r\nHost: h\r\n\r\n",
        "http10": b"GET /v1/whoami HTTP/1.0\r\n\r\n",
        "two-lengths": b"POST /v1/dsr HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}",
        "import-stream": b"POST /v1/import?import_id=a&on_conflict=skip HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n"
                         b"Expect: 100-continue\r\n\r\n{}\n",
        "static": b"GET /console/ HTTP/1.1\r\nHost: h\r\n\r\n",
        "method-405": b"PUT /v1/subjects HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
    }
    for name, raw in reqs.items():
        write("http_request", name, b"\x00" + raw)
        write("http_request", name + "-small-limits", b"\x01" + raw)


def leaf_hash(entry):
    return hashlib.sha256(b"\x00" + entry).digest()


def tree_hash(leaves):
    """RFC 6962 Merkle tree hash over leaf hashes."""
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + tree_hash(leaves[:k]) + tree_hash(leaves[k:])).digest()


def inclusion_path(m, leaves):
    if len(leaves) <= 1:
        return []
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    if m < k:
        return inclusion_path(m, leaves[:k]) + [tree_hash(leaves[k:])]
    return inclusion_path(m - k, leaves[k:]) + [tree_hash(leaves[:k])]


def vault_seeds(build_dir):
    cli = os.path.join(build_dir, "src", "custos")
    tmp = tempfile.mkdtemp(prefix="custos-corpus-")
    data = os.path.join(tmp, "data")

    def c(*args, stdin=None):
        return subprocess.run([cli, "--data-dir", data, *args], input=stdin, capture_output=True, text=True,
                              check=True).stdout

    c("init", "--fast-kdf")
    ids = []
    for body in ({"fields": {"given_name": "Ada", "email": "ada@example.com", "external_id": "crm-1"}},
                 {"fields": {"given_name": "Bob", "email": "bob@example.com"}}):
        ids.append(json.loads(c("subject", "put", stdin=json.dumps(body)))["id"])
    c("subject", "get", ids[0], "--purpose", "customer_service")
    c("subject", "find", "--email", "bob@example.com", "--purpose", "customer_service")
    c("audit", "checkpoint")
    c("subject", "get", ids[1], "--purpose", "customer_service")
    c("audit", "checkpoint")
    vkey = c("audit", "pubkey").strip()
    export = os.path.join(tmp, "export")
    subprocess.run([cli, "--data-dir", data, "audit", "export", "--out", export], check=True, capture_output=True)
    with open(export, "rb") as f:
        exp = f.read()
    write("audit_export", "export", b"\x00\x00" + exp)
    write("audit_export", "export-consistency", b"\x03" + struct.pack(">H", len(exp)) + exp + exp)
    # The records of the export: its entries and checkpoint notes.
    pos = exp.index(b"\n", len(b"custos-audit-export 1\n")) + 1
    n_entry = n_cp = 0
    while pos + 5 <= len(exp):
        kind, length = exp[pos:pos + 1], struct.unpack(">I", exp[pos + 1:pos + 5])[0]
        payload = exp[pos + 5:pos + 5 + length]
        pos += 5 + length
        if kind == b"E":
            write("audit_entry", "entry-%d" % n_entry, payload)
            n_entry += 1
        elif kind == b"C":
            write("checkpoint_note", "note-%d" % n_cp, b"\x00" + payload)
            n_cp += 1
        elif kind == b"Z":
            break
    write("checkpoint_note", "vkey", b"\x01" + vkey.encode())
    # An inclusion bundle (FORMAT.md §5) of the last entry the last checkpoint covers.
    note = open(os.path.join(CORPUS, "checkpoint_note", "note-%d" % (n_cp - 1)), "rb").read()[1:]
    size = int(note.split(b"\n")[1])
    entries_so_far = [open(os.path.join(CORPUS, "audit_entry", "entry-%d" % i), "rb").read() for i in range(size)]
    leaves = [leaf_hash(e) for e in entries_so_far]
    index = size - 1
    bundle = {"entry": base64.b64encode(entries_so_far[index]).decode(), "index": index, "tree_size": size,
              "proof": [h.hex() for h in inclusion_path(index, leaves)], "checkpoint": note.decode()}
    write("audit_export", "bundle", b"\x01" + json.dumps(bundle).encode())
    write("audit_export", "package-one-bundle", b"\x02" + json.dumps(bundle).encode())
    write("audit_export", "package-access-log", b"\x02" + json.dumps({"access_log": {"bundles": [bundle]}}).encode())
    # journal_recovery, sealed mode: the export's entries as payloads, once
    # intact and once with a flipped byte in the first record.
    entries = [open(os.path.join(CORPUS, "audit_entry", "entry-%d" % i), "rb").read() for i in range(n_entry)]
    payloads = b"".join(struct.pack(">H", len(e)) + e for e in entries)
    write("journal_recovery", "sealed-intact", b"\x00\x00" + payloads)
    write("journal_recovery", "sealed-flipped", b"\x00\x01" + struct.pack(">HB", 4100, 0x40) + payloads)
    # raw mode: a segment header as journal.cpp writes it (records will not open).
    header = b"CUSTOSAJ" + bytes([1, 2]) + bytes(6) + bytes(range(16)) + struct.pack("<Q", 1)
    header = header.ljust(4096, b"\0") + struct.pack("<I", 40) + bytes(40)
    write("journal_recovery", "raw-segment", b"\x01" + header)
    with open(os.path.join(HERE, "seed_keys.h"), "w") as f:
        f.write("// The verifier key of the vault tests/fuzz/make_corpus.py made the seed corpus\n"
                "// with (its exports, checkpoint notes and entries). Regenerated with the corpus.\n"
                "#pragma once\n\n#include <string_view>\n\nnamespace custos::fuzz {\n"
                "inline constexpr std::string_view kSeedVaultVkey = \"%s\";\n}  // namespace custos::fuzz\n" % vkey)
    shutil.rmtree(tmp)


def canonical_entry(seq, time, texts, fields, version=1, subjects=(), prev=bytes(32)):
    """An audit entry's canonical bytes (audit/FORMAT.md §1.1); texts are
    fields 3-8 then 11-15, as str."""
    def st(v):
        v = v.encode() if isinstance(v, str) else v
        return struct.pack(">I", len(v)) + v

    def lst(items):
        return struct.pack(">I", len(items)) + b"".join(st(i) for i in items)

    out = bytes([version]) + struct.pack(">Q", seq) + st(time)
    out += b"".join(st(t) for t in texts[:6]) + lst(fields) + lst([])
    out += b"".join(st(t) for t in texts[6:])
    out += lst(subjects) if version == 1 else struct.pack(">I", 2) + bytes(range(32))
    return out + prev


def block_rows():
    """block_row: rows of the earlier length-prefixed format (mode 0, block
    3) from entries like the vault's and from nearly empty ones, and entry descriptions (mode 1) that
    repeat, hex-pack and time their fields in the ways the compact row does."""
    entries = []
    for i in range(64):
        seq = 3 * 64 + i
        time = "2026-12-02T08:%02d:%02d.%06dZ" % (i // 60, i % 60, i * 37)
        texts = ["crm-marketing", "marketing", "tok-1", "marketing_email", "subject.read",
                 hashlib.md5(b"%d" % i).hexdigest(), "allowed", "", hashlib.md5(b"r%d" % i).hexdigest(), "node-1",
                 "returned=1" if i % 5 == 0 else ""]
        entries.append(canonical_entry(seq, time, texts, ["email", "given_name"], version=2 if i % 9 == 4 else 1,
                                       prev=hashlib.sha256(b"%d" % i).digest()))
    write("block_row", "length-prefixed", b"\x00\x03" + b"".join(struct.pack(">I", len(e)) + e for e in entries))
    # The same format within the fuzzer's 8 KB: entries with only a time.
    short = [canonical_entry(3 * 64 + i, "2026-12-02T08:00:00Z", [""] * 11, [], prev=bytes(32)) for i in range(64)]
    write("block_row", "length-prefixed-short", b"\x00\x03" + b"".join(struct.pack(">I", len(e)) + e for e in short))

    def text(v):  # an entry description's literal text field (block_row.cpp)
        return bytes([len(v)]) + v

    same, hexed = b"\x80", b"\x40" + bytes(range(16))
    for name, flags in (("vault-like", 2), ("committed", 3), ("raw-times", 0)):
        d = b"\x01\x05"
        for i in range(64):
            d += bytes([flags])
            d += struct.pack(">q", 1764662400000000 + i * 211) if flags & 2 else text(b"2026-12-02T08:00:%02dZ" % (i % 60))
            d += (text(b"crm-marketing") + text(b"marketing") + text(b"tok-1") + text(b"marketing_email") +
                  text(b"subject.read")) if i == 0 else same * 5
            d += hexed + (text(b"allowed") + text(b"")) + hexed + (text(b"node-1") + text(b"")) if i == 0 else \
                hexed + same * 2 + hexed + same * 2
            d += b"\x02" + text(b"email") + text(b"given_name")
            d += b"\x01\x07\x09" if flags & 1 else b"\x00\x09"  # subjects; root and prev (a byte each)
        write("block_row", name, d)
        write("block_row", name + "-damaged", d + b"\x00\x10\x7f\xff\xff\x00")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    for t in ("policy_yaml", "service_json", "http_request", "audit_export", "audit_entry", "checkpoint_note",
              "journal_recovery", "block_row"):
        shutil.rmtree(os.path.join(CORPUS, t), ignore_errors=True)
    policies()
    service_bodies()
    http_requests()
    block_rows()
    vault_seeds(sys.argv[1])
